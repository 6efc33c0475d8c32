"""The worker as a container's PID 1 (in a PID namespace of its own, as in a Fargate task):
ECS stops a task with SIGTERM, which PID 1 ignores unless it handles it. A Cancel stops the
execution and so the task: the work must really stop within seconds, not at the SIGKILL 30 s
later."""

import os
import signal
import subprocess
import time
from pathlib import Path

import apache_beam as beam
import pytest

from beamjobs import runtime
from beamjobs.domain.states import JobState
from beamjobs.local.embedded import local_settings, use_offline_credentials
from beamjobs.local.executor import worker_environment
from beamjobs.local.provision import provision
from tests.e2e import user_code
from tests.e2e.conftest import (
    ROOT,
    WORKER_PYTHON,
    Process,
    free_port,
    local_channel,
    secret_of,
    started_job,
)


@pytest.fixture
def stores(tmp_path):
    port = free_port()
    aws = Process(["aws", "--port", str(port), "--template", "template.yaml"], tmp_path / "aws.log")
    aws.wait_for_port(port)
    use_offline_credentials()
    settings = local_settings(f"http://127.0.0.1:{port}")
    provision(settings, ROOT / "template.yaml")  # the port opens before it is provisioned
    yield runtime.stores(settings), settings
    aws.stop()


def _child(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0])


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_worker_as_pid_1_stops_within_seconds_of_sigterm(stores, tmp_path):
    stores, settings = stores
    # Given a job whose DoFn sleeps for minutes, run by a worker that is PID 1
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([1]) | beam.Map(user_code.sleep_long)
    job = started_job(stores, "pid-one", pipeline)
    channel = local_channel(settings)
    worker = subprocess.Popen(
        # PID 1 of a namespace of its own, leading its own session, as a task's process is
        ["unshare", "--pid", "--fork", "--mount-proc", "setsid", WORKER_PYTHON]
        + ["-m", "beamjobs.worker", "pid-one"],
        cwd=ROOT,
        env={
            **worker_environment(settings, channel.url),
            "BEAMJOBS_WORKER_SECRET": secret_of(stores, job),
        },
        stdout=(tmp_path / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: stores.jobs.get("pid-one").state is JobState.RUNNING, 60)
        time.sleep(2)  # into the DoFn's sleep
        assert stores.jobs.get("pid-one").state is JobState.RUNNING, [
            m.text for e in stores.jobs.events("pid-one") for m in e.messages
        ]
        pid_one = _child(worker.pid)
        [nspid] = [
            line
            for line in Path(f"/proc/{pid_one}/status").read_text().splitlines()
            if line.startswith("NSpid:")
        ]
        assert nspid.split()[-1] == "1"  # its pid in its own namespace
        # When ECS stops the task
        os.kill(pid_one, signal.SIGTERM)
        stopped = time.monotonic()
        # Then the worker and its work end within 10 s
        worker.wait(10)
        assert time.monotonic() - stopped < 10
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        channel.stop()
