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
from beamjobs.identity import Caller

# Which function serves each unary RPC (functions are grouped by the permissions they need).
FUNCTION_FOR_RPC: dict[str, str] = {
    "Prepare": "control",
    "Run": "control",
    "Cancel": "control",
    "Drain": "control",
    # Not Job API RPCs: the shim's artifact staging session leases the staging token, and
    # records its outcome.
    "BeginStaging": "control",
    "RecordStaging": "control",
    "GetJobs": "query",
    "GetState": "query",
    "GetPipeline": "query",
    "GetJobMetrics": "query",
    "DescribePipelineOptions": "query",
    # Beamjobs' own Jobs service.
    "ListJobs": "query",
    "GetJob": "query",
    "ListMessages": "query",
}

# Lambda's synchronous payload limit; larger data goes to S3 and the event carries the key.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024


# A Lambda handler: (event, context) -> answer.
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class Invoker(Protocol):
    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]: ...


def event_for(rpc: str, caller: Caller, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The function to call for `rpc` and the event to send it, with a fresh request id (kept
    across retries of this call, so the handlers can deduplicate them)."""
    return FUNCTION_FOR_RPC[rpc], {
        "rpc": rpc,
        "request_id": uuid.uuid4().hex,
        "caller": caller.to_wire(),
        "request": request,
    }


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


# What Lambda answers for a function stopped at its timeout.
_TIMED_OUT_ERROR_TYPES = frozenset({"Sandbox.Timedout"})
# How long an outcome in doubt is waited for: the functions' timeout (template.yaml's Globals),
# after which an unfinished call's idempotency record has expired, and a margin.
IN_DOUBT_SECONDS = 35.0
IN_DOUBT_BACKOFF_SECONDS = 2.0

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
    function that crashed is reported as INTERNAL with its error message.

    A function that timed out may have done its side effects (Run may have started the job)
    before Lambda stopped it; its outcome is in doubt. The same event is sent again: the
    handler's idempotency record (keyed by the request id) answers what the first call
    recorded, or says the call is still in progress (then it is sent again, until its record
    expires at the function's timeout and the call runs anew)."""

    def __init__(
        self,
        lambda_client: Any,
        function_names: Mapping[str, str],
        *,
        attempts: int = 4,
        backoff_seconds: float = 0.1,
        in_doubt_seconds: float = IN_DOUBT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = lambda_client
        self._names = dict(function_names)
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._in_doubt_seconds = in_doubt_seconds
        self._sleep = sleep
        self._clock = clock

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        payload = _encode(event)
        failures = 0
        in_doubt_until: float | None = None
        while True:
            try:
                return self._invoke_once(function, payload)
            except _Retry as retry:
                delay = self._backoff * 2**failures
                if retry.in_doubt:
                    if in_doubt_until is None:
                        in_doubt_until = self._clock() + self._in_doubt_seconds
                    if self._clock() >= in_doubt_until:
                        raise Unavailable(
                            f"function {function}: {retry.reason}, and its outcome is still "
                            f"unknown after {self._in_doubt_seconds:g} s; retry the call"
                        ) from None
                    delay = min(IN_DOUBT_BACKOFF_SECONDS, delay)
                elif failures + 1 >= self._attempts:
                    raise Unavailable(
                        f"function {function} unavailable after {self._attempts} attempts "
                        f"({retry.reason})"
                    ) from None
                failures += 1
                self._sleep(delay)

    def _invoke_once(self, function: str, payload: bytes) -> dict[str, Any]:
        try:
            response = self._client.invoke(
                FunctionName=self._names[function],
                InvocationType="RequestResponse",
                Payload=payload,
            )
        except ClientError as error:
            code = error_code(error)
            if code not in _RETRYABLE_LAMBDA_CODES:
                raise Unavailable(f"function {function} could not be invoked: {code}") from error
            raise _Retry(code) from error
        except (ReadTimeoutError, ConnectionError) as error:
            # The invocation may have run: its outcome is in doubt, as for a timeout.
            raise _Retry(type(error).__name__, in_doubt=True) from error
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            if isinstance(body, dict) and body.get("errorType") in _TIMED_OUT_ERROR_TYPES:
                raise _Retry("it timed out", in_doubt=True)
            message = body.get("errorMessage", "") if isinstance(body, dict) else str(body)
            raise BeamjobsError(f"function {function} failed: {message}")
        if isinstance(body, dict) and body.get("error", {}).get("in_progress"):
            raise _Retry("the same call is still in progress", in_doubt=True)
        return dict(body)


class _Retry(Exception):
    def __init__(self, reason: str, *, in_doubt: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.in_doubt = in_doubt
