"""End-to-end tests: the real Beam Python SDK against Beamjobs processes started the way
`make run` starts them."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_job_api_pb2_grpc

from tests.e2e.user_scripts import build_sdist
from tests.jobstates import advance
from tests.processes import ROOT, WORKER_PYTHON, Process, free_port, serve

# Re-exported: the e2e tests import them from here.
__all__ = ["ROOT", "WORKER_PYTHON", "Process", "free_port", "serve"]

EMBEDDED = "beam:env:embedded_python:v1"


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory) -> str:
    """One server for the session, started as `make run` starts it."""
    port = free_port()
    server = serve(tmp_path_factory.mktemp("server"), "server", port)
    yield f"localhost:{port}"
    server.stop()


@pytest.fixture(scope="session")
def sdist(tmp_path_factory):
    """A tiny package, built into an sdist here: `shout("a") == "A!"`."""
    return build_sdist(tmp_path_factory.mktemp("tinypkg"), tmp_path_factory.mktemp("dist"))


@pytest.fixture
def job_service(endpoint):
    with grpc.insecure_channel(endpoint) as channel:
        yield beam_job_api_pb2_grpc.JobServiceStub(channel)


def options(endpoint: str, environment: str = EMBEDDED, *extra: str) -> PipelineOptions:
    return PipelineOptions(
        [
            "--runner=PortableRunner",
            f"--job_endpoint={endpoint}",
            f"--environment_type={environment}",
            *extra,
        ]
    )


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def started_job(stores, job_id: str, pipeline):
    """Record `pipeline` (a beam.Pipeline, run in the worker's own process) as job `job_id`,
    STARTING, as Prepare and Run would: for tests that run a worker themselves. Returns it."""
    from apache_beam.transforms import environments as beam_environments

    from beamjobs.domain.model import Job
    from beamjobs.domain.states import JobState
    from beamjobs.domain.worker_secrets import keep_worker_secret, mint_worker_secret, secret_sha256

    proto = pipeline.to_runner_api(
        default_environment=beam_environments.EmbeddedPythonEnvironment.default()
    )
    now = stores.jobs.now()
    secret = mint_worker_secret()
    keep_worker_secret(stores.blobs, job_id, secret)
    stores.jobs.create(
        Job(
            job_id=job_id,
            job_name=job_id,
            state=JobState.STOPPED,
            state_time=now,
            seq=1,
            created_at=now,
            pipeline_ref=stores.blobs.put_content("pipelines", proto.SerializeToString()),
            options_ref=stores.blobs.put_content("options", b"{}"),
            options_json="{}",
            worker_secret_sha256=secret_sha256(secret),
        )
    )
    return advance(stores.jobs, job_id, JobState.STARTING)


def local_channel(settings):
    """The workers' channel as the local executor serves it: the worker function's handler for
    these settings."""
    from beamjobs.local.worker_channel import LocalWorkerChannel
    from beamjobs_functions.worker.app import handler_for

    return LocalWorkerChannel(handler_for(settings))


def secret_of(stores, job) -> str:
    """The worker secret of a job that started_job recorded."""
    from beamjobs.domain.worker_secrets import worker_secret

    return worker_secret(stores.blobs, job.job_id)


def channel_of(url: str, job, secret: str):
    """The worker channel client of `job`, through the local executor's channel at `url`."""
    import boto3

    from beamjobs.aws.invoker import LambdaInvoker
    from beamjobs.worker.channel import WORKER_FUNCTION, JobChannel

    client = boto3.client("lambda", endpoint_url=url, region_name="us-east-1")
    invoker = LambdaInvoker(client, {WORKER_FUNCTION: WORKER_FUNCTION})
    return JobChannel(invoker, job.job_id, secret)
