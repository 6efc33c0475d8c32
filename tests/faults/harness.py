"""A fault harness: AWS's behaviour, played on real boto3 clients talking to the embedded AWS.

It hooks each client's `before-send` event (the last step before the HTTP request leaves), so
botocore's own retries, error parsing and our error mapping all run as they would against AWS.
Per call, the first matching rule decides what happens:

- `throttle`: AWS answers its throttle (DynamoDB's 400 ThrottlingException, S3's 503 SlowDown,
  Lambda's 429 TooManyRequestsException); botocore retries it, then gives up;
- `lose_response`: the request is sent and applied, and its response is lost (a read timeout),
  so botocore retries a call whose side effect already happened;
- `latency`: the call is delayed, then sent;
- `fail`: AWS answers 500 InternalServerError;
- `error`: AWS answers 400 with the rule's `code` (e.g. DynamoDB Streams' TrimmedDataAccessException
  for records past its 24 h retention, or LimitExceededException for a third reader of a shard).

And `kill_at_write(n)`: the process is SIGKILLed just before its n-th write to AWS leaves (a
task killed at that point of its work).

And limits AWS enforces and moto does not: `enforce_item_limit()` refuses a DynamoDB item over
400 KB (its UTF-8 size as stored, estimated from the request: a PutItem's item, an UpdateItem's
key and the values it sets) with AWS's ValidationException.

Rules match the operation (e.g. "PutItem", or "*" for any) and optionally a predicate on the
request (its JSON body as a dict, with the request's URL under "_url", which names S3's bucket
and key), and fire a bounded number of times, so a test says exactly which call misbehaves and
how often; or, with a `rate`, on that fraction of matching calls (a soak's steady weather); or,
as a `window`, on every matching call for a while (a function throttled for a minute, a hot
partition for 90 s: `on_partition`).

And faults AWS reports rather than answers: `task_start_failure` is what the run-job state
machine hands on when a worker's task never started (an image not pulled, a secret not read,
no Fargate capacity).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session

# The operations that change something in AWS (the kill points of kill_at_write).
WRITES = frozenset(
    {
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "CopyObject",
        # A worker's every call of its channel (beamjobs.app.worker_channel) writes something.
        "Invoke",
    }
)
# DynamoDB's item size limit.
ITEM_LIMIT_BYTES = 400 * 1024


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data


def _answer(service: str, url: str, status: int, error_type: str, message: str) -> AWSResponse:
    """An error answer in the service's own format (S3's XML, DynamoDB's JSON, Lambda's
    REST JSON)."""
    if service == "s3":
        body = f"<Error><Code>{error_type}</Code><Message>{message}</Message></Error>"
        return AWSResponse(url, status, {"Content-Type": "application/xml"}, _Body(body.encode()))
    if service == "lambda":
        body = json.dumps({"Type": "User", "message": message})
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": error_type}
        return AWSResponse(url, status, headers, _Body(body.encode()))
    body = json.dumps(
        {"__type": f"com.amazonaws.dynamodb.v20120810#{error_type}", "message": message}
    )
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-ErrorType": error_type}
    return AWSResponse(url, status, headers, _Body(body.encode()))


# What each service answers for a throttle, and for an internal error.
_THROTTLE = {
    "s3": (503, "SlowDown"),
    "dynamodb": (400, "ThrottlingException"),
    "dynamodb-streams": (400, "ThrottlingException"),
    # A function at its reserved concurrency (or the account's).
    "lambda": (429, "TooManyRequestsException"),
}
_FAILURE = {
    "s3": (500, "InternalError"),
    "dynamodb": (500, "InternalServerError"),
    "dynamodb-streams": (500, "InternalServerError"),
    "lambda": (500, "ServiceException"),
}


def on_partition(pk: str) -> Callable[[dict[str, Any]], bool]:
    """A rule's predicate: the request reads or writes partition `pk` (DynamoDB's throughput
    is per partition: one hot job is throttled while the others are not)."""
    quoted = json.dumps(pk)
    return lambda body: quoted in json.dumps(body)


@dataclass
class Rule:
    operation: str
    action: str
    times: int = 1
    when: Callable[[dict[str, Any]], bool] | None = None
    seconds: float = 0.0
    # The error code an `error` rule answers with.
    code: str = ""
    # The fraction of matching calls the rule fires on (drawn from the harness's seeded random).
    rate: float = 1.0
    # When (time.monotonic()) the rule stops firing: a window of bad weather.
    until: float | None = None
    fired: int = 0


@dataclass
class Faults:
    rules: list[Rule] = field(default_factory=list)
    # (operation, action) of every call a rule fired on, in order.
    fired: list[tuple[str, str]] = field(default_factory=list)
    item_limit: int | None = None
    kill_at: int | None = None
    writes: int = 0
    seed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random = field(init=False)
    _http: URLLib3Session = field(default_factory=URLLib3Session)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def attach(self, *clients: Any) -> Faults:
        for client in clients:
            client.meta.events.register_first("before-send", self._before_send)
        return self

    def detach(self, *clients: Any) -> None:
        for client in clients:
            client.meta.events.unregister("before-send", self._before_send)

    def kill_at_write(self, n: int) -> None:
        self.kill_at = n

    def enforce_item_limit(self, limit: int = ITEM_LIMIT_BYTES) -> None:
        self.item_limit = limit

    def add(self, operation: str, action: str, **options: Any) -> Rule:
        rule = Rule(operation, action, **options)
        with self._lock:
            self.rules.append(rule)
        return rule

    def window(self, operation: str, action: str, seconds: float, **options: Any) -> Rule:
        """A rule that fires on every matching call for the next `seconds` (e.g. a function
        throttled for a minute)."""
        return self.add(operation, action, times=10**9, until=time.monotonic() + seconds, **options)

    def _rule_for(self, operation: str, body: dict[str, Any]) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.operation not in (operation, "*") or rule.fired >= rule.times:
                    continue
                if rule.until is not None and time.monotonic() >= rule.until:
                    continue
                if rule.when is not None and not rule.when(body):
                    continue
                if rule.rate < 1.0 and self._random.random() >= rule.rate:
                    continue
                rule.fired += 1
                self.fired.append((operation, rule.action))
                return rule
        return None

    def _before_send(self, request: Any, event_name: str = "", **_: Any) -> AWSResponse | None:
        service, operation = event_name.split(".")[-2:]
        if self.kill_at is not None and operation in WRITES:
            with self._lock:
                self.writes += 1
                if self.writes == self.kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
        body: dict[str, Any] = {}
        if isinstance(request.body, bytes | str) and request.body:
            with contextlib.suppress(ValueError, UnicodeDecodeError):  # not JSON: S3's bytes
                body = json.loads(request.body)
        body = {**body, "_url": request.url}
        if self.item_limit is not None and operation in ("PutItem", "UpdateItem"):
            # An UpdateItem's item is at least its key and the values it sets.
            written = body.get("Item") or {
                **body.get("Key", {}),
                **body.get("ExpressionAttributeValues", {}),
            }
            size = len(json.dumps(written, ensure_ascii=False).encode())
            if size > self.item_limit:
                with self._lock:
                    self.fired.append((operation, "item_limit"))
                return _answer(
                    service, request.url, 400, "ValidationException", "Item size exceeded"
                )
        rule = self._rule_for(operation, body)
        if rule is None:
            return None
        if rule.action in ("throttle", "fail"):
            status, code = (_THROTTLE if rule.action == "throttle" else _FAILURE)[service]
            return _answer(service, request.url, status, code, f"injected: {rule.action}")
        if rule.action == "error":
            return _answer(service, request.url, 400, rule.code, f"injected: {rule.code}")
        if rule.action == "latency":
            time.sleep(rule.seconds)
            return None
        if rule.action == "lose_response":
            self._http.send(request)  # applied by AWS...
            raise ReadTimeoutError(endpoint_url=request.url)  # ...and its answer never arrives
        raise ValueError(f"unknown fault {rule.action!r}")


# -- faults AWS reports rather than answers ----------------------------------------------------

# Why ECS stops a task before its containers ran, as it words it (StoppedReason).
TASK_START_FAILURES = {
    "CannotPullContainer": (
        "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to "
        "resolve ref docker.io/apache/beam_python3.11_sdk:2.77.0: 429 Too Many Requests - "
        "Server message: toomanyrequests: You have reached your pull rate limit"
    ),
    "ResourceInitialization": (
        "ResourceInitializationError: unable to pull secrets or registry auth: execution "
        "resource retrieval failed: unable to retrieve secret from asm: service call has been "
        "retried 5 time(s): RequestError: send request failed"
    ),
}


def task_start_failure(job_id: str, kind: str) -> dict[str, Any]:
    """What the run-job state machine's Catch hands the reconcile function when the job's
    worker task never started: `kind` is a key of TASK_START_FAILURES (ECS stopped the task,
    and Step Functions fails the runTask.sync state with States.TaskFailed and the task, as
    DescribeTasks has it, for cause), or "capacity" (RunTask itself refused, and the state's
    retries ran out)."""
    if kind == "capacity":
        return {
            "job_id": job_id,
            "error": "ECS.AmazonECSException",
            "cause": "Capacity is unavailable at this time. Please try again later or in a "
            "different availability zone (Service: AmazonECS; Status Code: 400)",
        }
    task = {
        "LastStatus": "STOPPED",
        "DesiredStatus": "STOPPED",
        "StopCode": "TaskFailedToStart",
        "StoppedReason": TASK_START_FAILURES[kind],
        "Containers": [{"Name": "worker", "LastStatus": "STOPPED"}],
    }
    return {"job_id": job_id, "error": "States.TaskFailed", "cause": json.dumps(task)}


def task_exited(job_id: str, exit_code: int) -> dict[str, Any]:
    """The Catch's hand-over for a worker task that started, and whose worker exited with
    `exit_code` (the job's own failure)."""
    task = {
        "LastStatus": "STOPPED",
        "StopCode": "EssentialContainerExited",
        "StoppedReason": "Essential container in task exited",
        "Containers": [{"Name": "worker", "LastStatus": "STOPPED", "ExitCode": exit_code}],
    }
    return {"job_id": job_id, "error": "States.TaskFailed", "cause": json.dumps(task)}
