"""Invokers: how the shim reaches the Lambda handlers. Both take the same JSON event and return
the handler's JSON answer, so local mode runs exactly the code that runs on AWS."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

from beamjobs.aws import error_code
from beamjobs.errors import BeamjobsError, InvalidArgument, Unavailable

# Which function serves each unary RPC (functions are grouped by the permissions they need).
FUNCTION_FOR_RPC: dict[str, str] = {
    "Prepare": "control",
    "Run": "control",
    "Cancel": "control",
    "Drain": "control",
    # Not a Job API RPC: the shim's artifact staging session records its outcome.
    "RecordStaging": "control",
    "GetJobs": "query",
    "GetState": "query",
    "GetPipeline": "query",
    "GetJobMetrics": "query",
    "DescribePipelineOptions": "query",
}

# Lambda's synchronous payload limit; larger data goes to S3 and the event carries the key.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024


# A Lambda handler: (event, context) -> answer.
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class Invoker(Protocol):
    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]: ...


def event_for(rpc: str, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The function to call for `rpc` and the event to send it, with a fresh request id (kept
    across retries of this call, so the handlers can deduplicate them)."""
    return FUNCTION_FOR_RPC[rpc], {"rpc": rpc, "request_id": uuid.uuid4().hex, "request": request}


def _encode(event: dict[str, Any]) -> bytes:
    payload = json.dumps(event, separators=(",", ":")).encode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            f"the request is too large to forward ({len(payload)} bytes of metadata)"
        )
    return payload


@dataclass(frozen=True)
class LocalContext:
    """The parts of Lambda's context object that the handlers' Powertools utilities read."""

    function_name: str
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:local"
    aws_request_id: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


class InProcessInvoker:
    """Calls the handler functions in this process, with the event serialized as Lambda would."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = dict(handlers)

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        payload = _encode(event)
        context = LocalContext(function_name=function, aws_request_id=event["request_id"])
        answer = self._handlers[function](json.loads(payload), context)
        return dict(json.loads(json.dumps(answer)))


_RETRYABLE_LAMBDA_CODES = frozenset(
    {
        "TooManyRequestsException",
        "ServiceException",
        "EC2ThrottledException",
        "ResourceNotReadyException",
        "ResourceConflictException",
    }
)


class LambdaInvoker:
    """Calls the deployed functions with `lambda.invoke` (RequestResponse). Throttling and
    transport failures are retried a bounded number of times, then reported as UNAVAILABLE; a
    function that crashed is reported as INTERNAL with its error message."""

    def __init__(
        self,
        lambda_client: Any,
        function_names: Mapping[str, str],
        *,
        attempts: int = 4,
        backoff_seconds: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = lambda_client
        self._names = dict(function_names)
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._sleep = sleep

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        payload = _encode(event)
        last_failure = ""
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._backoff * 2 ** (attempt - 1))
            try:
                response = self._client.invoke(
                    FunctionName=self._names[function],
                    InvocationType="RequestResponse",
                    Payload=payload,
                )
            except ClientError as error:
                code = error_code(error)
                if code not in _RETRYABLE_LAMBDA_CODES:
                    raise Unavailable(
                        f"function {function} could not be invoked: {code}"
                    ) from error
                last_failure = code
                continue
            except (ReadTimeoutError, ConnectionError) as error:
                last_failure = type(error).__name__
                continue
            body = json.loads(response["Payload"].read() or b"null")
            if response.get("FunctionError"):
                message = body.get("errorMessage", "") if isinstance(body, dict) else str(body)
                raise BeamjobsError(f"function {function} failed: {message}")
            return dict(body)
        raise Unavailable(
            f"function {function} unavailable after {self._attempts} attempts ({last_failure})"
        )
