"""Integration tests run on the embedded AWS (moto's server on localhost, reset for every test),
with the table and bucket built from template.yaml's own definitions, as `make run` builds them.
Every AWS call the shim and the handlers make is allowed or refused as AWS would under the role
template.yaml gives each (tests.iam_policies); a test with a refused call fails."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from beamjobs import runtime
from beamjobs.api import pipeline_pb2
from beamjobs.aws import clients
from beamjobs.aws.caller_key import caller_key
from beamjobs.domain import caller_claims
from beamjobs.domain.model import Job
from beamjobs.domain.states import JobState
from beamjobs.local.embedded import EmbeddedAws
from beamjobs.local.invoker import InProcessInvoker
from beamjobs.local.provision import provision
from beamjobs.settings import Settings
from beamjobs.shim.server import MAX_MESSAGE_BYTES, start_shim
from tests import iam_policies

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"
# The key the shim signs its events' callers with, and the handlers verify.
CALLER_KEY = "integration-tests-caller-key"


def signed(event: dict[str, Any]) -> dict[str, Any]:
    """A handler event as the shim sends it: its caller signed with the tests' key."""
    return caller_claims.signed(CALLER_KEY.encode(), event)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingExecutor:
    """Records which jobs were started and stopped; runs nothing."""

    name = "recording"

    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[str] = []
        self._lock = threading.Lock()

    def start(self, job: Job) -> None:
        with self._lock:
            self.started.append(job.job_id)

    def stop(self, job_id: str) -> None:
        with self._lock:
            self.stopped.append(job_id)


@pytest.fixture(scope="session")
def embedded_aws():
    aws = EmbeddedAws()
    aws.start()
    yield aws
    aws.stop()


# The role each handler runs under on AWS (template.yaml's, after the SAM transform).
FUNCTION_ROLES = {
    "control": "ControlFunctionRole",
    "query": "QueryFunctionRole",
    "worker": "WorkerFunctionRole",
    "reconcile": "ReconcileFunctionRole",
}


@pytest.fixture(scope="session")
def iam_enforcement() -> iam_policies.Enforcement:
    """The template's roles enforced on the clients of beamjobs.aws.clients (made again, from a
    session with the enforcement attached: a client keeps the events it was made with)."""
    clients.client.cache_clear()
    return iam_policies.enforcement_on(clients._session().events)


def pytest_terminal_summary(terminalreporter):
    if iam_policies.enforcement_on.cache_info().currsize:
        calls = iam_policies.enforcement_on(clients._session().events).calls
        checked = ", ".join(f"{role} {n}" for role, n in sorted(calls.items()))
        terminalreporter.write_line(f"AWS calls checked against their role: {checked}")


@pytest.fixture(scope="session")
def transformed_template() -> dict[str, Any]:
    return iam_policies.template_roles(TEMPLATE)


@pytest.fixture(autouse=True)
def calls_within_their_roles(iam_enforcement, monkeypatch):
    """Handlers called in process act under their function's role; the test fails if any call
    of this test was one its role does not allow (even one the caller tolerated)."""
    invoke = InProcessInvoker.invoke

    def invoke_in_role(self, function, event):
        with iam_policies.acting_as(FUNCTION_ROLES[function]):
            return invoke(self, function, event)

    monkeypatch.setattr(InProcessInvoker, "invoke", invoke_in_role)
    iam_enforcement.refusals.clear()
    yield
    refused = list(iam_enforcement.refusals)
    assert not refused, f"calls their role does not allow: {refused}"


@pytest.fixture
def settings(monkeypatch, embedded_aws, iam_enforcement, transformed_template) -> Settings:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)
    reset = urllib.request.Request(f"{embedded_aws.endpoint_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset).close()
    settings = Settings(
        table_name="jobs",
        bucket_name="blobs",
        endpoint_url=embedded_aws.endpoint_url,
        caller_key=CALLER_KEY,
    )
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    provision(settings, TEMPLATE)
    runtime.stores.cache_clear()  # the stores remember blobs of the AWS just reset
    table = clients.client("dynamodb", settings).describe_table(TableName=settings.table_name)
    iam_enforcement.deploy(
        iam_policies.Deployment(
            transformed_template,
            {
                "JobsTable": settings.table_name,
                "IdempotencyTable": settings.idempotency_table_name,
                "ArtifactsBucket": settings.bucket_name,
            },
            table["Table"]["LatestStreamArn"],
        )
    )
    return settings


def with_quotas(monkeypatch, settings: Settings, executor: Any, **quotas: Any) -> Settings:
    """These settings with other quotas, for the shim and for the handlers it calls (which
    read theirs from the environment, as on AWS), starting jobs with `executor`."""
    changed = dataclasses.replace(settings, **quotas)
    for name, value in changed.to_env().items():
        monkeypatch.setenv(name, value)
    runtime.install_executor(changed, executor)
    return changed


@pytest.fixture
def stores(settings) -> runtime.Stores:
    return runtime.stores(settings)


@pytest.fixture
def executor(settings, stores) -> RecordingExecutor:
    recording = RecordingExecutor()
    runtime.install_executor(settings, recording)
    return recording


@pytest.fixture(autouse=True)
def fresh_handlers():
    """Handlers build their dependencies once per process; each test gets a fresh set."""
    from beamjobs_functions.control import app as control
    from beamjobs_functions.query import app as query
    from beamjobs_functions.worker import app as worker

    caches = (
        control._routes,
        control._caller_key,
        query._routes,
        query._caller_key,
        worker._deployed,
    )
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


class RunningShim:
    """A shim serving on a loop of its own thread, and a channel to it."""

    def __init__(self, shim: Any, loop: asyncio.AbstractEventLoop, channel: grpc.Channel) -> None:
        self.feed = shim.feed
        self.health = shim.health
        self.channel = channel
        self._shim = shim
        self._loop = loop

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shim.stop(grace=0, drain=0), self._loop).result(
            timeout=10
        )

    def listen_to_doorbell(self, doorbell: int) -> None:
        """As `beamjobs serve` does with the embedded AWS's doorbell."""
        self._loop.call_soon_threadsafe(self.feed.listen_to_doorbell, doorbell)


@contextmanager
def running_shim(
    settings: Settings, invoker: Any = None, authentication: Any = None
) -> Iterator[RunningShim]:
    """The shim on a free port of 127.0.0.1, with the real handlers in process (or behind
    `invoker`), authenticating calls with `authentication` if given."""
    from beamjobs_functions.control.app import lambda_handler as control
    from beamjobs_functions.query.app import lambda_handler as query

    loop = asyncio.new_event_loop()
    # (Named as the shim's own threads are: its calls are made under the shim's role.)
    thread = threading.Thread(target=loop.run_forever, name="shim-loop", daemon=True)
    thread.start()
    start = start_shim(
        invoker or InProcessInvoker({"control": control, "query": query}),
        runtime.stores(settings),
        clients.client("dynamodbstreams", settings),
        host="127.0.0.1",
        port=0,
        advertised_endpoint=settings.advertised_endpoint,
        authentication=authentication,
        caller_key=caller_key(settings),
        quotas=settings.quotas(),
    )
    shim = asyncio.run_coroutine_threadsafe(start, loop).result(timeout=10)
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    running = None
    try:
        with grpc.insecure_channel(f"127.0.0.1:{shim.port}", options=options) as channel:
            running = RunningShim(shim, loop, channel)
            yield running
    finally:
        asyncio.run_coroutine_threadsafe(shim.stop(grace=0, drain=0), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture
def channel(settings, stores, executor) -> Iterator[grpc.Channel]:
    with running_shim(settings) as shim:
        yield shim.channel


def make_job(job_id: str, *, created: float | None = None, **fields: Any) -> Job:
    """A STOPPED job record as Prepare would make it now, or at `created` (fields override the
    defaults)."""
    created = time.time() if created is None else created
    values: dict[str, Any] = {
        "job_name": "name",
        "state": JobState.STOPPED,
        "state_time": created,
        "seq": 1,
        "created_at": created,
        "pipeline_ref": "p",
        "options_ref": "o",
        "options_json": "{}",
        # The token of the events/ files' staging calls.
        "staging_token_sha256": json.loads((EVENTS / "control_begin_staging.json").read_text())[
            "request"
        ]["token_sha256"],
    }
    return Job(job_id=job_id, **{**values, **fields})


def pipeline_bytes(*, bounded: bool = True, padding: str = "") -> bytes:
    pipeline = pipeline_pb2.Pipeline(root_transform_ids=["impulse"])
    pipeline.components.transforms["impulse"].spec.urn = "beam:transform:impulse:v1"
    pipeline.components.pcollections["out"].is_bounded = (
        pipeline_pb2.IsBounded.BOUNDED if bounded else pipeline_pb2.IsBounded.UNBOUNDED
    )
    pipeline.components.environments["py"].urn = "beam:env:embedded_python:v1"
    if padding:
        pipeline.requirements.append(padding)
    return pipeline.SerializeToString()
