"""Flink, as a real cluster: a JobManager and a TaskManager (each a JVM of Flink's own
distribution) behind Beam's Flink job server, all started here (engines.clusters). The real Beam
SDK submits to a `beamjobs serve --engine flink=…`; its harness runs LOOPBACK, in the
submitting process, where the cluster's TaskManager reaches it."""

from __future__ import annotations

import time

import apache_beam as beam
import grpc
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.portability.api import beam_job_api_pb2_grpc
from apache_beam.transforms.periodicsequence import PeriodicImpulse

from engines.clusters import FlinkCluster, JobServer
from tests.e2e.conftest import free_port, serve
from tests.e2e.test_upstream_engines import (
    _finished,
    _job_id,
    _logged,
    _submit,
    _summary,
    _wait,
    assert_counted_every_word,
)

ENGINE = "flink"
LEASE_SECONDS = 8
HEARTBEAT_SECONDS = 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = FlinkCluster(tmp_path_factory.mktemp("flink"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def job_server(cluster, tmp_path_factory):
    started = JobServer.flink(cluster, tmp_path_factory.mktemp("flink-job-server"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def front(cluster, job_server, tmp_path_factory):
    """The Beamjobs the SDK submits to, with Beam's Flink job server as engine `flink`."""
    port = free_port()
    server = serve(
        tmp_path_factory.mktemp("front"),
        "front",
        port,
        "--engine",
        f"{ENGINE}={job_server.endpoint}",
        "--flink-rest",
        f"{ENGINE}={cluster.master}",
        env={
            "BEAMJOBS_LEASE_SECONDS": str(LEASE_SECONDS),
            "BEAMJOBS_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
        },
    )
    yield f"localhost:{port}"
    server.stop()


def _word_count(tmp_path, front, tick, *flags):
    return _submit(tmp_path, front, tick, *flags, engine=ENGINE, environment="LOOPBACK")


def _flink_job(cluster, upstream_id: str) -> dict:
    """Flink's own view of the job (its overview: state, tasks by state), found by its name,
    which starts its id at the job server ({} when Flink has no such job)."""
    for job in cluster.rest("/jobs/overview")["jobs"]:
        if upstream_id.startswith(f"{job['name']}_"):
            return dict(job)
    return {}


def _flink_state(cluster, upstream_id: str) -> str | None:
    return _flink_job(cluster, upstream_id).get("state")


def _running_on_flink(cluster, front: str, job_id: str) -> str:
    """Wait until Flink runs the job; its id at the job server."""
    upstream_id = _wait(
        lambda: _summary(front, job_id).get("upstream_job_id"), 90, "the upstream job"
    )
    _wait(lambda: _flink_state(cluster, upstream_id) == "RUNNING", 90, "RUNNING on Flink")
    return upstream_id


def _state(front: str, job_id: str) -> str:
    return _summary(front, job_id)["state"]


def test_a_word_count_with_an_extra_package_runs_on_flink_to_done(cluster, front, sdist, tmp_path):
    # Given a word count that stages a package, submitted for Flink
    process = _word_count(tmp_path, front, 0, f"--extra_package={sdist}")

    # When it has run
    result = _finished(process)

    # Then it is DONE with the right output, and its counter came back through GetJobMetrics
    assert_counted_every_word(result, tmp_path)
    summary = _summary(front, result["JOB"])
    assert summary["engine"] == ENGINE
    # ... and Flink lists the job FINISHED
    assert _flink_state(cluster, summary["upstream_job_id"]) == "FINISHED"


def test_cancel_cancels_the_job_in_flink(cluster, front, tmp_path):
    # Given a slow word count RUNNING on Flink
    process = _word_count(tmp_path, front, 3)
    job_id = _job_id(process)
    upstream_id = _running_on_flink(cluster, front, job_id)

    # When it is cancelled through Beamjobs
    with grpc.insecure_channel(front) as channel:
        beam_job_api_pb2_grpc.JobServiceStub(channel).Cancel(api.CancelJobRequest(job_id=job_id))

    # Then it is CANCELLED here, and CANCELED in Flink
    _wait(lambda: _state(front, job_id) == "CANCELLED", 60, "CANCELLED")
    _wait(lambda: _flink_state(cluster, upstream_id) == "CANCELED", 30, "CANCELED in Flink")
    out, _ = process.communicate(timeout=60)
    assert "in state CANCELLED" in out


def test_an_unbounded_pipeline_runs_on_flink_until_drained(cluster, front):
    # Given an endless streaming pipeline (PeriodicImpulse), submitted for Flink
    options = PipelineOptions(
        [
            "--runner=PortableRunner",
            f"--job_endpoint={front}",
            "--environment_type=LOOPBACK",
            "--streaming",
            f"--beamjobs_engine={ENGINE}",
        ]
    )
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | PeriodicImpulse(fire_interval=0.5) | beam.Map(str)
    result = pipeline.run()
    job_id = result._job_id

    # When it is RUNNING on Flink, and drained
    upstream_id = _running_on_flink(cluster, front, job_id)
    assert _state(front, job_id) == "RUNNING"
    with grpc.insecure_channel(front) as channel:
        beam_job_api_pb2_grpc.JobServiceStub(channel).Drain(api.DrainJobRequest(job_id=job_id))

    # Then it ends: Beam's Flink job server cannot drain, so it is cancelled, and says so
    _wait(lambda: _state(front, job_id) in ("DONE", "CANCELLED"), 90, "its end")
    if _state(front, job_id) == "CANCELLED":
        assert any("drain" in text.lower() for text in _logged(front, job_id))
    _wait(
        lambda: _flink_state(cluster, upstream_id) in ("FINISHED", "CANCELED"), 30, "its end there"
    )
    with pytest.raises(RuntimeError, match="in state (CANCELLED|DONE)"):
        result.wait_until_finish()


def test_a_lost_taskmanager_ends_the_job_as_flink_decides(cluster, front, tmp_path):
    # Given a slow word count RUNNING on Flink (Flink restarts nothing unless asked)
    process = _word_count(tmp_path, front, 3)
    job_id = _job_id(process)
    upstream_id = _running_on_flink(cluster, front, job_id)
    running = lambda: _flink_job(cluster, upstream_id)["tasks"]["running"] > 0  # noqa: E731
    _wait(running, 60, "its tasks RUNNING on the TaskManager")

    # When its TaskManager is SIGKILLed mid-job
    cluster.taskmanager.kill()
    try:
        # Then Flink fails the job, and so does Beamjobs: nothing is left RUNNING
        _wait(lambda: _flink_state(cluster, upstream_id) == "FAILED", 90, "FAILED in Flink")
        _wait(lambda: _state(front, job_id) == "FAILED", 60, "FAILED here")
        out, _ = process.communicate(timeout=60)
        assert "in state FAILED" in out
    finally:
        cluster.start_taskmanager()


def test_a_killed_job_server_fails_the_job_as_engine_lost(cluster, job_server, front, tmp_path):
    # Given a slow word count RUNNING on Flink (last: the job server does not come back)
    process = _word_count(tmp_path, front, 3)
    job_id = _job_id(process)
    upstream_id = _running_on_flink(cluster, front, job_id)

    # When Beam's Flink job server is killed
    job_server.kill()
    killed = time.monotonic()

    # Then the job fails once the lease is over, and says the engine was lost
    _wait(lambda: _state(front, job_id) == "FAILED", LEASE_SECONDS + 30, "FAILED")
    # (the lease runs from the mirror's last answer, at most a heartbeat before the kill)
    assert time.monotonic() - killed >= LEASE_SECONDS - HEARTBEAT_SECONDS
    assert any("engine lost" in text for text in _logged(front, job_id))
    # ... and the Flink job, which no job server follows any more, is cancelled through Flink
    _wait(lambda: _flink_state(cluster, upstream_id) == "CANCELED", 30, "CANCELED in Flink")
    process.kill()
    process.wait()
