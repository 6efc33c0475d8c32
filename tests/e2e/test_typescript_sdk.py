"""The Beam TypeScript SDK (npm `apache-beam`, run with Node.js) submits to Beamjobs with
LOOPBACK: its client speaks the Job API through protobuf-ts over grpc-js, and its own process
runs the user code, driven by the worker."""

import json
import subprocess
from pathlib import Path

from apache_beam.portability.api import beam_job_api_pb2 as api

CLIENT = Path(__file__).parent / "typescript"
EXPECTED = ["the: 3", "cat: 2", "sat: 2", "on: 1", "mat: 1", "dog: 1", "a: 1", "ran: 1"]


def test_the_typescript_sdk_runs_a_wordcount_with_loopback(endpoint, job_service, tmp_path):
    # Given the SDK's client, installed from npm by `make test`
    assert (CLIENT / "node_modules" / "apache-beam").is_dir(), "run `make test` (npm ci)"
    output = tmp_path / "counts.txt"
    # When it submits a word count with LOOPBACK
    done = subprocess.run(
        ["node", "wordcount.js", endpoint, str(output)],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Then the job is DONE with the right counts, and Beamjobs recorded it so
    assert result["state"] == "DONE"
    assert sorted(output.read_text().splitlines()) == sorted(EXPECTED)
    state = job_service.GetState(api.GetJobStateRequest(job_id=result["jobId"]))
    assert state.state == api.JobState.DONE
