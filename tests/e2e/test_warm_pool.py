"""The local executor's warm pool: N workers forked ahead and waiting, replaced when handed a
job or when they die, and no state shared between the jobs they run."""

import os
import signal
import sys
import time
import types
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.e2e.conftest import free_port, options, serve


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            listed = (task / "children").read_text()
        except FileNotFoundError:  # a thread that ended since it was listed: no children
            continue
        found.update(int(child) for child in listed.split())
    return found


def _waiting_workers(server_pid: int) -> set[int]:
    """The fork server's children that are not running a job: warm workers waiting."""
    [fork_server] = [
        pid
        for pid in _children(server_pid)
        if b"beamjobs.worker.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return _children(fork_server)


def _until(condition, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


@pytest.fixture
def pool_of_three(tmp_path, monkeypatch):
    monkeypatch.setenv("BEAMJOBS_WARM_WORKERS", "3")
    port = free_port()
    server = serve(tmp_path, "warm", port)
    yield server.popen.pid, f"localhost:{port}"
    server.stop()


class LeaveTraces(beam.DoFn):
    """Changes its process the ways a job could leak into the next one."""

    def process(self, element):
        os.environ["BEAMJOBS_LEFT_BEHIND"] = "1"
        sys.modules["beamjobs_left_behind"] = types.ModuleType("beamjobs_left_behind")
        yield element


class FindTraces(beam.DoFn):
    def process(self, element):
        yield f"environment: {'BEAMJOBS_LEFT_BEHIND' in os.environ}"
        yield f"modules: {'beamjobs_left_behind' in sys.modules}"


def test_a_dead_waiting_worker_is_replaced_and_jobs_share_nothing(pool_of_three):
    server_pid, endpoint = pool_of_three
    waiting = _until(lambda: len(w := _waiting_workers(server_pid)) == 3 and w)

    # A waiting worker that dies is replaced by a new one.
    victim = min(waiting)
    os.kill(victim, signal.SIGKILL)
    replaced = _until(lambda: len(w := _waiting_workers(server_pid)) == 3 and victim not in w and w)
    assert len(replaced - waiting) == 1

    with beam.Pipeline(options=options(endpoint)) as first:
        _ = first | beam.Create([1]) | beam.ParDo(LeaveTraces())
    with beam.Pipeline(options=options(endpoint)) as second:
        found = second | beam.Create([1]) | beam.ParDo(FindTraces())
        assert_that(found, equal_to(["environment: False", "modules: False"]))

    # Each job took a waiting worker, and the pool is full again with new ones.
    after = _until(lambda: len(w := _waiting_workers(server_pid)) == 3 and w)
    assert len(after & replaced) == 1
