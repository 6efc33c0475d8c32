"""Execution users can trust: cancel stops the work, a lost worker fails its job, metrics flow
while the job runs."""

import os
import signal
import time
from pathlib import Path

import apache_beam as beam
import grpc
import pytest
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.portability.api import beam_job_api_pb2_grpc
from apache_beam.runners.runner import PipelineState

from tests.e2e.conftest import alive, free_port, options, serve


class LoopForever(beam.DoFn):
    """Writes its process id, then a heartbeat file, until it is stopped from outside."""

    def __init__(self, directory):
        self.directory = directory

    def process(self, element):
        Path(self.directory, "pid").write_text(str(os.getpid()))
        while True:
            Path(self.directory, "beat").write_text(repr(time.time()))
            time.sleep(0.05)


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _final_state(result) -> str:
    try:
        return result.wait_until_finish()
    except RuntimeError:
        return result.state


def _start_looping_job(endpoint, tmp_path):
    pipeline = beam.Pipeline(options=options(endpoint))
    _ = pipeline | beam.Create([1]) | beam.ParDo(LoopForever(str(tmp_path)))
    result = pipeline.run()
    _wait_for(tmp_path / "beat")
    return result


def test_cancel_stops_the_work_within_ten_seconds(endpoint, tmp_path):
    result = _start_looping_job(endpoint, tmp_path)
    asked = time.monotonic()
    result.cancel()
    assert _final_state(result) == PipelineState.CANCELLED
    assert time.monotonic() - asked < 10
    beat = (tmp_path / "beat").read_text()
    time.sleep(1)
    assert (tmp_path / "beat").read_text() == beat, "the DoFn is still running"
    with pytest.raises(ProcessLookupError):
        os.kill(int((tmp_path / "pid").read_text()), 0)


def test_a_killed_worker_fails_its_job_as_worker_lost(endpoint, tmp_path):
    result = _start_looping_job(endpoint, tmp_path)
    os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)
    with pytest.raises(RuntimeError, match="worker lost"):
        result.wait_until_finish()
    assert result.state == PipelineState.FAILED


def test_cancel_of_a_finished_job_answers_its_final_state(endpoint, job_service):
    pipeline = beam.Pipeline(options=options(endpoint))
    _ = pipeline | beam.Create([1])
    result = pipeline.run()
    assert result.wait_until_finish() == PipelineState.DONE
    answer = job_service.Cancel(api.CancelJobRequest(job_id=result._job_id))
    assert answer.state == api.JobState.DONE


class Measure(beam.DoFn):
    def __init__(self):
        self.seen = Metrics.counter("stats", "seen")
        self.sizes = Metrics.distribution("stats", "size")
        self.last = Metrics.gauge("stats", "last")

    def process(self, element):
        self.seen.inc()
        self.sizes.update(element)
        self.last.set(element)
        yield element


def test_counters_distributions_and_gauges(endpoint):
    pipeline = beam.Pipeline(options=options(endpoint))
    _ = pipeline | beam.Create([5]) | beam.ParDo(Measure())
    result = pipeline.run()
    assert result.wait_until_finish() == PipelineState.DONE
    query = result.metrics().query(MetricsFilter().with_namespace("stats"))
    assert [c.committed for c in query["counters"]] == [1]
    assert [(d.committed.count, d.committed.sum) for d in query["distributions"]] == [(1, 5)]
    assert [g.committed.value for g in query["gauges"]] == [5]
    assert [c.attempted for c in query["counters"]] == [1]


class CountFirst(beam.DoFn):
    def __init__(self):
        self.first = Metrics.counter("progress", "first_stage")

    def process(self, element):
        self.first.inc()
        yield element


class Block(beam.DoFn):
    def __init__(self, directory):
        self.directory = directory

    def process(self, element):
        Path(self.directory, "second-stage").write_text("started")
        while not Path(self.directory, "release").exists():
            time.sleep(0.05)
        yield element


def test_attempted_metrics_are_published_while_the_job_runs(endpoint, job_service, tmp_path):
    pipeline = beam.Pipeline(options=options(endpoint))
    _ = (
        pipeline
        | beam.Create([1, 2, 3])
        | beam.ParDo(CountFirst())
        | beam.Reshuffle()  # a stage boundary
        | beam.ParDo(Block(str(tmp_path)))
    )
    result = pipeline.run()
    _wait_for(tmp_path / "second-stage")
    deadline = time.monotonic() + 10
    attempted = []
    while time.monotonic() < deadline:
        metrics = job_service.GetJobMetrics(api.GetJobMetricsRequest(job_id=result._job_id)).metrics
        attempted = [m for m in metrics.attempted if m.labels.get("NAME") == "first_stage"]
        if attempted:
            break
        time.sleep(0.1)
    state = job_service.GetState(api.GetJobStateRequest(job_id=result._job_id)).state
    (tmp_path / "release").write_text("go")
    assert attempted, "no attempted metrics while the job was running"
    assert state == api.JobState.RUNNING
    assert result.wait_until_finish() == PipelineState.DONE


def test_unknown_job_metrics_are_not_found(job_service):
    with pytest.raises(grpc.RpcError) as raised:
        job_service.GetJobMetrics(api.GetJobMetricsRequest(job_id="nope"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def short_lease_endpoint(tmp_path_factory):
    """A server whose workers' leases are 3 s (heartbeats every 0.5 s), and whose silent
    workers that still run are lost after 6 s."""
    port = free_port()
    server = serve(
        tmp_path_factory.mktemp("short-lease"),
        "short-lease",
        port,
        env={
            "BEAMJOBS_LEASE_SECONDS": "3",
            "BEAMJOBS_HEARTBEAT_SECONDS": "0.5",
            "BEAMJOBS_RUNNING_LEASE_SECONDS": "6",
        },
    )
    yield f"localhost:{port}"
    server.stop()


def test_a_worker_paused_past_its_lease_is_lost_and_stops_when_it_resumes(
    short_lease_endpoint, tmp_path
):
    # Given a running job whose worker is paused (SIGSTOP) for longer than its running lease:
    # its process is alive, so only the running lease makes it lost
    result = _start_looping_job(short_lease_endpoint, tmp_path)
    pid = int((tmp_path / "pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        # Then the job fails as "worker lost"
        with pytest.raises(RuntimeError, match="worker lost: no heartbeat since"):
            result.wait_until_finish()
    finally:
        os.kill(pid, signal.SIGCONT)
    # And the resumed worker stops its work (the reconciler stopped it, or its next heartbeat
    # learns it is lost)
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, "the resumed worker went on"
        time.sleep(0.1)
    # And the job keeps its one terminal state
    with grpc.insecure_channel(short_lease_endpoint) as channel:
        stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
        request = api.GetJobStateRequest(job_id=result._job_id)
        states = [e.state for e in stub.GetStateStream(request)]
    assert states[-1] == api.JobState.FAILED
    assert sum(s in (api.JobState.DONE, api.JobState.FAILED) for s in states) == 1
