"""Invokers: how the shim (and a worker, through its channel) reaches the Lambda handlers. Every
invoker takes the same JSON event and returns the handler's JSON answer, so local mode
(beamjobs.local.invoker) runs exactly the code that runs on AWS (LambdaInvoker, here)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

from beamjobs.aws.errors import error_code
from beamjobs.domain import caller_claims
from beamjobs.domain.errors import BeamjobsError, InvalidArgument, Unavailable
from beamjobs.domain.identity import Caller

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


def event_for(
    rpc: str, caller: Caller, request: dict[str, Any], caller_key: bytes
) -> tuple[str, dict[str, Any]]:
    """The function to call for `rpc` and the event to send it, with a fresh request id (kept
    across retries of this call, so the handlers can deduplicate them), its caller signed with
    `caller_key`."""
    event = {
        "rpc": rpc,
        "request_id": uuid.uuid4().hex,
        "caller": caller.to_wire(),
        "request": request,
    }
    return FUNCTION_FOR_RPC[rpc], caller_claims.signed(caller_key, event)


def encode(event: dict[str, Any]) -> bytes:
    payload = json.dumps(event, separators=(",", ":")).encode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            f"the request is too large to forward ({len(payload)} bytes of metadata)"
        )
    return payload


# What Lambda answers for a function stopped at its timeout: an errorType of its own on
# today's runtimes ("RequestId: … Error: Task timed out after 30.00 seconds"), only the message
# on older ones ("2026-01-01T00:00:00.000Z <request id> Task timed out after 30.00 seconds").
_TIMED_OUT_ERROR_TYPE = "Sandbox.Timedout"
_TIMED_OUT_MESSAGE = re.compile(r"\bTask timed out after [0-9.]+ seconds\b")
# How long an outcome in doubt is waited for: the functions' timeout (template.yaml's Globals),
# after which an unfinished call's idempotency record has expired, and a margin.
IN_DOUBT_SECONDS = 35.0
IN_DOUBT_BACKOFF_SECONDS = 2.0


class LambdaInvoker:
    """Calls the deployed functions with `lambda.invoke` (RequestResponse). Throttling and
    transport failures are retried by botocore (the client's retry mode, beamjobs.aws.clients)
    and, when it gives up, reported as UNAVAILABLE; a function that crashed is reported as
    INTERNAL with its error message.

    A function that timed out may have done its side effects (Run may have started the job)
    before Lambda stopped it; its outcome is in doubt, as is that of an invocation whose
    answer was lost. The same event is sent again: the handler's idempotency record (keyed by
    the request id) answers what the first call recorded, or says the call is still in
    progress (then it is sent again, until its record expires at the function's timeout and
    the call runs anew). That loop is the invoker's only one."""

    def __init__(
        self,
        lambda_client: Any,
        function_names: Mapping[str, str],
        *,
        backoff_seconds: float = 0.1,
        in_doubt_seconds: float = IN_DOUBT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = lambda_client
        self._names = dict(function_names)
        self._backoff = backoff_seconds
        self._in_doubt_seconds = in_doubt_seconds
        self._sleep = sleep
        self._clock = clock

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        payload = encode(event)
        tries = 0
        in_doubt_until = self._clock() + self._in_doubt_seconds
        while True:
            try:
                return self._invoke_once(function, payload)
            except _InDoubt as doubt:
                if self._clock() >= in_doubt_until:
                    raise Unavailable(
                        f"function {function}: {doubt.reason}, and its outcome is still "
                        f"unknown after {self._in_doubt_seconds:g} s; retry the call"
                    ) from None
                self._sleep(min(IN_DOUBT_BACKOFF_SECONDS, self._backoff * 2**tries))
                tries += 1

    def _invoke_once(self, function: str, payload: bytes) -> dict[str, Any]:
        try:
            response = self.client.invoke(
                FunctionName=self._names[function],
                InvocationType="RequestResponse",
                Payload=payload,
            )
        except (ReadTimeoutError, ConnectionError) as error:
            # The invocation may have run: its outcome is in doubt, as for a timeout.
            raise _InDoubt(type(error).__name__) from error
        except ClientError as error:
            raise Unavailable(
                f"function {function} could not be invoked: {error_code(error)}"
            ) from error
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            message = body.get("errorMessage", "") if isinstance(body, dict) else str(body)
            timed_out = isinstance(body, dict) and body.get("errorType") == _TIMED_OUT_ERROR_TYPE
            if timed_out or _TIMED_OUT_MESSAGE.search(str(message)):
                raise _InDoubt("it timed out")
            raise BeamjobsError(f"function {function} failed: {message}")
        if isinstance(body, dict) and body.get("error", {}).get("in_progress"):
            raise _InDoubt("the same call is still in progress")
        return dict(body)


class _InDoubt(Exception):
    """An invocation whose outcome is unknown: it may or may not have run."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
