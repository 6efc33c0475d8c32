"""The mirror (beamjobs.upstream.mirror) in this process, against a scripted upstream engine (a real gRPC
Job API server, tests/upstream_double.py), reporting through the worker function as on AWS: a
real Drain, the upstream's refusals and failures, and an upstream that forgot the job."""

from __future__ import annotations

import threading
import time

import pytest

from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Upstream
from beamjobs.domain.states import JobState
from beamjobs.domain.worker_secrets import mint_worker_secret, secret_sha256
from beamjobs.local.invoker import InProcessInvoker
from beamjobs.upstream.client import UpstreamJobService
from beamjobs.upstream.flink import FlinkRest
from beamjobs.upstream.mirror import Mirror
from beamjobs.worker.channel import WORKER_FUNCTION, JobChannel
from beamjobs_functions.worker import app as worker_function
from tests.flink_rest_double import FlinkRestDouble
from tests.iam_policies import acting_as
from tests.integration.conftest import make_job, pipeline_bytes
from tests.jobstates import advance
from tests.upstream_double import ScriptedUpstream, State

S = JobState
LEASE_SECONDS = 2.0


@pytest.fixture(autouse=True)
def fresh_worker_function():
    worker_function._deployed.cache_clear()
    yield
    worker_function._deployed.cache_clear()


def _started(stores, job_id: str, *, bounded: bool = True, **fields) -> str:
    """A job Run has started (STARTING) on the engine "up": its worker secret."""
    secret = mint_worker_secret()
    stores.jobs.create(
        make_job(
            job_id,
            pipeline_ref=stores.blobs.put_content("pipelines", pipeline_bytes(bounded=bounded)),
            options_ref=stores.blobs.put_content("options", b"{}"),
            worker_secret_sha256=secret_sha256(secret),
            bounded=bounded,
            engine="up",
            **fields,
        )
    )
    advance(stores.jobs, job_id, S.STARTING)
    return secret


class Mirroring:
    """A mirror running in a thread of this process."""

    def __init__(
        self, job_id: str, secret: str, upstream: ScriptedUpstream, flink: FlinkRest | None = None
    ) -> None:
        invoker = InProcessInvoker({WORKER_FUNCTION: worker_function.lambda_handler})
        self._service = UpstreamJobService(upstream.endpoint)
        mirror = Mirror(
            JobChannel(invoker, job_id, secret),
            self._service,
            "up",
            heartbeat_seconds=0.2,
            lease_seconds=LEASE_SECONDS,
            max_job_seconds=60,
            flink=flink,
        )
        self.thread = threading.Thread(target=self._run, args=(mirror,), daemon=True)
        self.thread.start()

    @staticmethod
    def _run(mirror: Mirror) -> None:
        # As in its task: the worker task's role, which reaches nothing but the worker channel.
        with acting_as("WorkerTaskRole"):
            mirror.run()

    def join(self) -> None:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the mirror did not end"
        self._service.close()


@pytest.fixture
def upstream():
    started = ScriptedUpstream()
    yield started
    started.stop()


def _wait(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _states(stores, job_id: str) -> list[JobState]:
    return [e.state for e in stores.jobs.events(job_id) if e.state is not None]


def _texts(stores, job_id: str) -> list[str]:
    return [m.text for e in stores.jobs.events(job_id) for m in e.messages]


def test_drain_really_drains_on_an_engine_that_drains(settings, stores, upstream):
    # Given a streaming job running upstream
    secret = _started(stores, "drained", bounded=False)
    mirroring = Mirroring("drained", secret, upstream)
    _wait(lambda: upstream.state == State.RUNNING, "RUNNING upstream")

    # When it is drained through Beamjobs
    assert Jobs(stores.jobs).drain("drained").state is S.DRAINING

    # Then the upstream drains it, and the job ends DRAINED after DRAINING
    mirroring.join()
    assert "Drain" in upstream.calls and "Cancel" not in upstream.calls
    assert _states(stores, "drained")[-3:] == [S.RUNNING, S.DRAINING, S.DRAINED]
    assert stores.jobs.get("drained").upstream == Upstream("up-1")


def test_an_engine_that_cannot_drain_cancels_the_job_and_says_so(settings, stores):
    upstream = ScriptedUpstream(drains=False)
    try:
        secret = _started(stores, "undrainable", bounded=False)
        mirroring = Mirroring("undrainable", secret, upstream)
        _wait(lambda: upstream.state == State.RUNNING, "RUNNING upstream")
        Jobs(stores.jobs).drain("undrainable")
        mirroring.join()
    finally:
        upstream.stop()
    assert _states(stores, "undrainable")[-2:] == [S.CANCELLING, S.CANCELLED]
    assert any("cannot drain" in text for text in _texts(stores, "undrainable"))


def test_the_upstreams_refusal_fails_the_job_with_its_status(settings, stores):
    upstream = ScriptedUpstream(refuse_prepare="this engine runs no Python")
    try:
        secret = _started(stores, "refused")
        Mirroring("refused", secret, upstream).join()
    finally:
        upstream.stop()
    assert _states(stores, "refused")[-1] is S.FAILED
    [cause] = _texts(stores, "refused")
    assert "refused the job" in cause and "INVALID_ARGUMENT: this engine runs no Python" in cause


def test_a_failed_upstream_job_fails_with_its_error_and_keeps_its_metrics(
    settings, stores, upstream
):
    secret = _started(stores, "failing")
    mirroring = Mirroring("failing", secret, upstream)
    _wait(lambda: upstream.state == State.RUNNING, "RUNNING upstream")

    # When the upstream job logs, then fails with a traceback
    upstream.say("starting")
    upstream.say("Traceback: boom", api_error())
    upstream.move(State.FAILED)

    # Then the job FAILED, its cause the upstream's error, with the upstream's metrics
    mirroring.join()
    assert _states(stores, "failing")[-1] is S.FAILED
    assert _texts(stores, "failing") == ["starting", "Traceback: boom", "Traceback: boom"]
    assert stores.blobs.get(stores.jobs.get("failing").metrics_ref).endswith(b"counter")


def test_a_cause_the_upstream_sends_after_its_failed_state_is_the_jobs(settings, stores, upstream):
    # Given an upstream that, as Prism, sends a failed job's cause after the FAILED state
    upstream.cause_after_failure = "bundle failed: Traceback: late"
    secret = _started(stores, "late")
    mirroring = Mirroring("late", secret, upstream)
    _wait(lambda: upstream.state == State.RUNNING, "RUNNING upstream")
    # When the upstream job fails
    upstream.move(State.FAILED)
    # Then the job FAILED, with that cause
    mirroring.join()
    assert _states(stores, "late")[-1] is S.FAILED
    assert _texts(stores, "late")[-1] == "bundle failed: Traceback: late"


def api_error() -> int:
    from beamjobs.api import job_api_pb2

    return job_api_pb2.JobMessage.JOB_MESSAGE_ERROR


def test_a_cancel_through_beamjobs_is_forwarded(settings, stores, upstream):
    secret = _started(stores, "cancelled")
    mirroring = Mirroring("cancelled", secret, upstream)
    _wait(lambda: upstream.state == State.RUNNING, "RUNNING upstream")
    Jobs(stores.jobs).cancel("cancelled")
    mirroring.join()
    assert upstream.state == State.CANCELLED
    assert _states(stores, "cancelled")[-2:] == [S.CANCELLING, S.CANCELLED]


def test_a_slow_upstream_metrics_call_does_not_hold_the_heartbeat_back(settings, stores, upstream):
    # Given an engine whose GetJobMetrics takes 3 s (the heartbeat is every 0.2 s)
    upstream.metrics_seconds = 3.0
    secret = _started(stores, "slow")
    mirroring = Mirroring("slow", secret, upstream)
    _wait(lambda: upstream.state == State.RUNNING, "RUNNING upstream")
    _wait(lambda: "slow" in stores.jobs.heartbeats(["slow"]), "a first heartbeat")
    # While a metrics call is under way, the heartbeats go on
    time.sleep(1.5)
    assert time.time() - stores.jobs.heartbeats(["slow"])["slow"] < 0.8
    Jobs(stores.jobs).cancel("slow")
    mirroring.join()
    assert _states(stores, "slow")[-1] == S.CANCELLED


def test_a_resumed_mirror_whose_upstream_forgot_the_job_fails_it_as_engine_lost(
    settings, stores, upstream
):
    # Given a job a mirror left RUNNING upstream as "up-gone", an id the upstream does not know
    secret = _started(stores, "forgotten")
    job = advance(stores.jobs, "forgotten", S.RUNNING)
    Jobs(stores.jobs).attach(job.job_id, "up-gone")
    # When a mirror resumes it
    Mirroring("forgotten", secret, upstream).join()
    # Then the job failed: the engine lost it
    assert _states(stores, "forgotten")[-1] is S.FAILED
    [cause] = _texts(stores, "forgotten")
    assert cause.startswith("engine lost") and "no longer knows job up-gone" in cause


def test_an_upstream_unreachable_past_the_lease_is_engine_lost(settings, stores, upstream):
    secret = _started(stores, "unreachable")
    mirroring = Mirroring("unreachable", secret, upstream)
    _wait(lambda: upstream.state == State.RUNNING, "RUNNING upstream")
    stopped = time.monotonic()
    upstream.stop()
    mirroring.join()
    assert time.monotonic() - stopped >= LEASE_SECONDS
    assert _states(stores, "unreachable")[-1] is S.FAILED
    assert "engine lost" in _texts(stores, "unreachable")[-1]


def test_a_mirror_that_died_before_the_upstream_ran_the_job_prepares_it_again(
    settings, stores, upstream
):
    # Given a job whose mirror attached upstream preparation "up-1", and died before running it
    secret = _started(stores, "again")
    advance(stores.jobs, "again", S.RUNNING)
    upstream.Prepare(upstream_request(), None)
    Jobs(stores.jobs).attach("again", "up-1")
    # When a mirror resumes it
    mirroring = Mirroring("again", secret, upstream)
    _wait(lambda: upstream.state == State.RUNNING, "RUNNING upstream")
    upstream.move(State.DONE)
    mirroring.join()
    # Then it ran once, as a new preparation that replaced the one that never ran
    assert upstream.calls.count("Run") == 1 and list(upstream.prepared) == ["up-1", "up-2"]
    assert stores.jobs.get("again").upstream == Upstream("up-2")
    assert _states(stores, "again")[-1] is S.DONE


def upstream_request():
    from beamjobs.api import job_api_pb2

    return job_api_pb2.PrepareJobRequest(job_name="again")


def test_the_upstream_job_is_named_by_the_jobs_id(settings, stores, upstream):
    secret = _started(stores, "named")
    mirroring = Mirroring("named", secret, upstream)
    _wait(lambda: upstream.state == State.RUNNING, "RUNNING upstream")
    Jobs(stores.jobs).cancel("named")
    mirroring.join()
    [prepared] = upstream.prepared.values()
    assert prepared.pipeline_options["beam:option:job_name:v1"] == "named"


def test_a_cancel_reaches_the_flink_job_that_beams_flink_job_server_leaves_running(
    settings, stores, upstream
):
    # Given a job running upstream on Beam's Flink job server, and Flink running it as "flinked"
    flink = FlinkRestDouble({"f1": ("flinked", "RUNNING")})
    try:
        secret = _started(stores, "flinked")
        mirroring = Mirroring("flinked", secret, upstream, FlinkRest(flink.address))
        _wait(lambda: upstream.state == State.RUNNING, "RUNNING upstream")
        # When it is cancelled through Beamjobs
        Jobs(stores.jobs).cancel("flinked")
        mirroring.join()
    finally:
        flink.stop()
    # Then both the job server and Flink were told
    assert upstream.state == State.CANCELLED
    assert flink.jobs["f1"] == ("flinked", "CANCELED")


def test_a_lost_job_server_still_has_its_flink_job_cancelled(settings, stores):
    # Given a job running on Beam's Flink job server, and Flink running it
    upstream = ScriptedUpstream()
    flink = FlinkRestDouble({"f1": ("orphan", "RUNNING")})
    try:
        secret = _started(stores, "orphan")
        mirroring = Mirroring("orphan", secret, upstream, FlinkRest(flink.address))
        _wait(lambda: upstream.state == State.RUNNING, "RUNNING upstream")
        # When the job server is lost for longer than the lease
        upstream.stop()
        mirroring.join()
    finally:
        flink.stop()
    # Then the job failed as engine lost, and the Flink job, which no one follows, is cancelled
    assert _states(stores, "orphan")[-1] is S.FAILED
    assert any("engine lost" in text for text in _texts(stores, "orphan"))
    assert flink.jobs["f1"] == ("orphan", "CANCELED")
