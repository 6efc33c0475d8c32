"""A Lambda function stopped at its timeout after its side effects: Run wrote STARTING and
started the job's work, then Lambda stopped it before it answered. The shim's invoker sends the
same call again; the client must get the job it asked for, started once, not an error that
makes it submit the pipeline a second time."""

import io
import json
from dataclasses import dataclass

import pytest

from beamjobs import runtime
from beamjobs.aws.invoker import LambdaInvoker, event_for
from beamjobs.domain.identity import LOCAL_CALLER
from beamjobs.domain.states import JobState
from beamjobs.local.invoker import LocalContext
from tests.integration.conftest import CALLER_KEY, RecordingExecutor, pipeline_bytes

# The function's remaining time when it starts: its idempotency record of a call in progress
# expires then (so a call stopped at its timeout can run again).
REMAINING_MS = 600


class TimedOut(BaseException):
    """Lambda stopping the function at its timeout: nothing after this point runs (not even
    the idempotency utility's clean-up, which handles only Exceptions)."""


class StoppedAfterStart(RecordingExecutor):
    """The first start is the function's last act: it times out right after it."""

    def start(self, job):
        super().start(job)
        if len(self.started) == 1:
            raise TimedOut


@dataclass(frozen=True)
class ShortContext(LocalContext):
    def get_remaining_time_in_millis(self) -> int:
        return REMAINING_MS


class InProcessLambda:
    """lambda.invoke over the real handlers, answering a function stopped at its timeout as
    Lambda does (FunctionError, and `timed_out`: the body of its runtime's answer)."""

    def __init__(self, timed_out: dict) -> None:
        from beamjobs_functions.control.app import lambda_handler

        self._handler = lambda_handler
        self._timed_out = timed_out
        self.outcomes: list[str] = []

    def invoke(self, FunctionName, InvocationType, Payload):  # noqa: N803 (boto3's names)
        event = json.loads(Payload)
        context = ShortContext(function_name=FunctionName, aws_request_id=event["request_id"])
        try:
            answer = self._handler(event, context)
        except TimedOut:
            self.outcomes.append("timed out")
            body = json.dumps(self._timed_out).encode()
            return {"FunctionError": "Unhandled", "Payload": io.BytesIO(body)}
        in_progress = answer.get("error", {}).get("in_progress")
        self.outcomes.append("in progress" if in_progress else "answered")
        return {"Payload": io.BytesIO(json.dumps(answer).encode())}


@pytest.mark.parametrize(
    "timed_out",
    [
        {
            "errorType": "Sandbox.Timedout",
            "errorMessage": "RequestId: 8f5c Error: Task timed out after 30.00 seconds",
        },
        # runtimes before Sandbox.Timedout: the message alone says it
        {"errorMessage": "2026-12-06T10:00:00.000Z 8f5c Task timed out after 30.00 seconds"},
    ],
    ids=["error-type", "message-only"],
)
def test_a_run_that_timed_out_after_starting_the_job_answers_that_job(settings, stores, timed_out):
    # Given a prepared job, and a Run whose function times out right after starting the work
    executor = StoppedAfterStart()
    runtime.install_executor(settings, executor)
    lambda_service = InProcessLambda(timed_out)
    invoker = LambdaInvoker(
        lambda_service, {"control": "control"}, backoff_seconds=0.05, in_doubt_seconds=10
    )
    pipeline_ref = stores.blobs.put_content("pipelines", pipeline_bytes())
    prepared = invoker.invoke(
        *event_for(
            "Prepare",
            LOCAL_CALLER,
            {
                "pipeline_ref": pipeline_ref,
                "pipeline_options": {},
                "staging_token_sha256": "ab" * 32,
            },
            CALLER_KEY.encode(),
        )
    )
    job_id = prepared["result"]["preparation_id"]
    # When the client calls Run
    answer = invoker.invoke(
        *event_for("Run", LOCAL_CALLER, {"preparation_id": job_id}, CALLER_KEY.encode())
    )
    # Then the call, sent again by the invoker, answers the job, which started once
    assert answer == {"result": {"job_id": job_id}}
    # (the first outcome is Prepare's; no record is kept of a Run, whose aggregate starts a
    # job once: the retry is answered at once)
    assert lambda_service.outcomes[1:] == ["timed out", "answered"]
    states = [e.state for e in stores.jobs.events(job_id) if e.state is not None]
    assert states == [JobState.STOPPED, JobState.STARTING]
    # and its work was started again while STARTING (starting is idempotent), never failed
    assert executor.started == [job_id, job_id]
