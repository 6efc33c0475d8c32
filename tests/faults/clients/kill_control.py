"""Call the control function with Prepare, Run and Cancel events (a JSON list) in turn, as
Lambda would, each after the job the previous one answered, SIGKILLed just before its n-th
write to AWS: `python kill_control.py EVENTS_JSON N` (settings from the environment, as a
function's). The function's context says it has little time left, so the
idempotency record of a call cut short expires soon after (as at a real timeout)."""

import json
import sys
from dataclasses import dataclass

from beamjobs import runtime
from beamjobs.aws import clients
from beamjobs.local.invoker import LocalContext
from beamjobs.settings import Settings
from tests.faults.harness import Faults
from tests.integration.conftest import RecordingExecutor, signed

REMAINING_MS = 1000


@dataclass(frozen=True)
class ShortContext(LocalContext):
    def get_remaining_time_in_millis(self) -> int:
        return REMAINING_MS


if __name__ == "__main__":
    events, n = json.loads(sys.argv[1]), int(sys.argv[2])
    settings = Settings.from_env()
    runtime.install_executor(settings, RecordingExecutor())
    from beamjobs_functions.control.app import lambda_handler

    faults = Faults().attach(clients.client("dynamodb", settings), clients.client("s3", settings))
    faults.kill_at_write(n)
    job_id = None
    for event in events:
        if event["rpc"] == "Run":
            event["request"]["preparation_id"] = job_id
        if event["rpc"] == "Cancel":
            event["request"]["job_id"] = job_id
        context = ShortContext(function_name="control", aws_request_id=event["request_id"])
        answer = lambda_handler(signed(event), context)
        assert "result" in answer, answer
        job_id = answer["result"].get("preparation_id", job_id)
