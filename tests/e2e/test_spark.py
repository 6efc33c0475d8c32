"""Spark, as a real cluster: a standalone master and worker (each a JVM of Spark's own
distribution) behind Beam's Spark job server, all started here (engines.clusters). The real Beam
SDK submits to a `beamjobs serve --engine spark=…`; its harness runs LOOPBACK, in the submitting
process, where the cluster's executors reach it."""

from __future__ import annotations

import grpc
import pytest
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.portability.api import beam_job_api_pb2_grpc

from engines.clusters import JobServer, SparkCluster
from tests.e2e.conftest import free_port, serve
from tests.e2e.test_upstream_engines import (
    _finished,
    _job_id,
    _submit,
    _summary,
    _wait,
    assert_counted_every_word,
)

ENGINE = "spark"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = SparkCluster(tmp_path_factory.mktemp("spark"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def front(cluster, tmp_path_factory):
    """The Beamjobs the SDK submits to, with Beam's Spark job server as engine `spark`."""
    job_server = JobServer.spark(cluster, tmp_path_factory.mktemp("spark-job-server"))
    port = free_port()
    server = serve(
        tmp_path_factory.mktemp("front"),
        "front",
        port,
        "--engine",
        f"{ENGINE}={job_server.endpoint}",
    )
    yield f"localhost:{port}"
    server.stop()
    job_server.stop()


def _word_count(tmp_path, front, tick):
    return _submit(tmp_path, front, tick, engine=ENGINE, environment="LOOPBACK")


def _applications(cluster, which: str) -> dict[str, str]:
    """The master's applications (`activeapps` or `completedapps`): name → state."""
    return {app["name"]: app["state"] for app in cluster.status()[which]}


def _spark_app(cluster, which: str, job_id: str) -> str | None:
    """The state of the job's Spark application (Beam names it after the job's name, which the
    mirror makes the job's id here)."""
    return next(
        (state for name, state in _applications(cluster, which).items() if job_id in name), None
    )


def test_a_word_count_runs_on_spark_to_done(cluster, front, tmp_path):
    # Given a word count submitted for Spark
    # When it has run
    result = _finished(_word_count(tmp_path, front, 0))

    # Then it is DONE with the right output and its counter
    assert_counted_every_word(result, tmp_path)
    assert _summary(front, result["JOB"])["engine"] == ENGINE
    # ... as an application of the Spark cluster, FINISHED
    assert _spark_app(cluster, "completedapps", result["JOB"]) == "FINISHED"


def test_cancel_stops_the_job_on_spark(cluster, front, tmp_path):
    # Given a slow word count running as an application of the Spark cluster
    process = _word_count(tmp_path, front, 3)
    job_id = _job_id(process)
    _wait(lambda: _spark_app(cluster, "activeapps", job_id) == "RUNNING", 120, "RUNNING on Spark")

    # When it is cancelled through Beamjobs
    with grpc.insecure_channel(front) as channel:
        beam_job_api_pb2_grpc.JobServiceStub(channel).Cancel(api.CancelJobRequest(job_id=job_id))

    # Then it is CANCELLED here, and its Spark application ends
    _wait(lambda: _summary(front, job_id)["state"] == "CANCELLED", 60, "CANCELLED")
    _wait(lambda: _spark_app(cluster, "activeapps", job_id) is None, 60, "its Spark app to end")
    out, _ = process.communicate(timeout=60)
    assert "in state CANCELLED" in out
