"""The control function killed (SIGKILL) at every write point of Prepare, Run and Cancel, one
run per point. The client's calls are then retried as the shim's invoker retries them (the same
request ids, once the killed call's idempotency record has expired): every call answers, the
job is prepared, started and cancelled exactly once, and every view agrees."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from beamjobs.domain.identity import LOCAL_CALLER
from beamjobs.domain.states import JobState
from beamjobs.local.invoker import LocalContext
from tests.faults.clients.kill_control import REMAINING_MS
from tests.integration.conftest import ROOT, pipeline_bytes, signed, with_quotas

DRIVER = Path(__file__).parent / "clients" / "kill_control.py"
# More write points than the three calls make: the last run gets through untouched.
MOST_WRITES = 20


def _calls(n, pipeline_ref):
    return [
        {
            "rpc": "Prepare",
            "request_id": f"prepare-{n}",
            "caller": LOCAL_CALLER.to_wire(),
            "request": {
                "pipeline_ref": pipeline_ref,
                "pipeline_options": {},
                "job_name": "j",
                "staging_token_sha256": "ab" * 32,
            },
        },
        {"rpc": "Run", "request_id": f"run-{n}", "caller": LOCAL_CALLER.to_wire(), "request": {}},
        {
            "rpc": "Cancel",
            "request_id": f"cancel-{n}",
            "caller": LOCAL_CALLER.to_wire(),
            "request": {},
        },
    ]


def _retry(handler, event):
    """The invoker's retry: the same event until the function answers (a call still in
    progress is sent again once its record expired)."""
    deadline = time.monotonic() + 10
    while True:
        answer = handler(signed(event), LocalContext(function_name="control"))
        if not answer.get("error", {}).get("in_progress"):
            return answer
        assert time.monotonic() < deadline, event
        time.sleep(REMAINING_MS / 4000)


def test_the_control_function_killed_at_every_write_point_loses_and_repeats_nothing(
    monkeypatch, settings, stores, executor
):
    from beamjobs_functions.control.app import lambda_handler

    # Each round leaves a job CANCELLING (active): room for all of them.
    settings = with_quotas(monkeypatch, settings, executor, quota_concurrent_jobs=1000)

    pipeline_ref = stores.blobs.put_content("pipelines", pipeline_bytes())
    killed_points = 0
    for n in range(1, MOST_WRITES + 1):
        calls = _calls(n, pipeline_ref)
        # Given the three calls made by a function killed just before its n-th write
        done = subprocess.run(
            [sys.executable, str(DRIVER), json.dumps(calls), str(n)],
            cwd=ROOT,
            env={**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        killed = done.returncode == -9
        assert killed or done.returncode == 0, done.stderr[-3000:]
        # When the client's calls are retried (Run and Cancel once Prepare has answered)
        prepared = _retry(lambda_handler, calls[0])
        job_id = prepared["result"]["preparation_id"]
        ran = _retry(lambda_handler, {**calls[1], "request": {"preparation_id": job_id}})
        cancelled = _retry(lambda_handler, {**calls[2], "request": {"job_id": job_id}})
        # Then each answered, and the job was prepared, started and cancelled once
        assert ran == {"result": {"job_id": job_id}}, (n, ran)
        assert cancelled == {"result": {"state": "CANCELLING"}}, (n, cancelled)
        states = [e.state for e in stores.jobs.events(job_id) if e.state is not None]
        assert states == [JobState.STOPPED, JobState.STARTING, JobState.CANCELLING], (n, states)
        assert stores.jobs.get(job_id).state is JobState.CANCELLING
        [listed] = [j for j in stores.jobs.list_jobs() if j.job_id == job_id]
        assert listed.state is JobState.CANCELLING
        killed_points += killed
        if not killed:
            break
    assert 0 < killed_points < MOST_WRITES, "the last run must get through untouched"
    print(f"{killed_points} write points of Prepare, Run and Cancel killed", file=sys.stderr)
