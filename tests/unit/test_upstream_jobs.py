"""The aggregate's rules for jobs on an upstream engine (beamjobs.upstream.mirror reports them), and the
choice of engine at Prepare, on the in-memory store (sockets off)."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beamjobs.domain.engines import OWN_PRISM, EngineChoice, Engines, parse_engine, parse_engines
from beamjobs.domain.errors import Conflict, FailedPrecondition, InvalidArgument
from beamjobs.domain.executor import ExecutorError
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message, is_after
from beamjobs.domain.states import JobState
from beamjobs.local.memory_store import MemoryJobStore
from beamjobs.upstream.client import (
    RECEIVE_MAX_BYTES,
    UpstreamError,
    UpstreamJobService,
    UpstreamMessage,
)
from tests.jobstates import advance
from tests.unit.test_jobs import prepared, states
from tests.upstream_double import ScriptedUpstream

S = JobState
ENGINE_KEY = "beam:option:beamjobs_engine:v1"


@pytest.fixture
def jobs() -> Jobs:
    return Jobs(MemoryJobStore())


def running(jobs: Jobs, job_id: str = "j", **fields: object) -> None:
    prepared(jobs.store, job_id, **fields)
    advance(jobs.store, job_id, S.STARTING, S.RUNNING)


def said(jobs: Jobs, job_id: str = "j") -> list[str]:
    return [m.text for e in jobs.store.events(job_id) for m in e.messages]


def upstream(*pairs: tuple[str, str]) -> list[tuple[str, Message]]:
    return [(i, Message("JOB_MESSAGE_BASIC", text, 1.0)) for i, text in pairs]


def test_a_job_runs_upstream_once(jobs):
    running(jobs)
    jobs.attach("j", "up-1")
    jobs.attach("j", "up-1")  # the same mirror, again: nothing new
    with pytest.raises(Conflict):
        jobs.attach("j", "up-2")
    # A preparation that never ran is replaced by the mirror that found it so
    jobs.attach("j", "up-2", replacing="up-1")
    assert jobs.get("j").upstream.job_id == "up-2"


def test_a_job_not_running_runs_nowhere(jobs):
    prepared(jobs.store)
    with pytest.raises(FailedPrecondition):
        jobs.attach("j", "up-1")


def test_mirrored_messages_are_kept_once_in_order_whatever_is_sent_again(jobs):
    running(jobs)
    jobs.attach("j", "up")
    jobs.mirror("j", upstream(("1", "a"), ("2", "b")))
    # A resumed mirror's replay, overlapping what was mirrored, and a message of its own
    jobs.mirror("j", upstream(("1", "a"), ("2", "b"), ("", "mine"), ("3", "c")))
    jobs.mirror("j", upstream(("3", "c")))
    assert said(jobs) == ["a", "b", "mine", "c"]
    assert jobs.get("j").upstream.cursor == "3"


def test_a_job_on_no_upstream_mirrors_nothing(jobs):
    running(jobs)
    with pytest.raises(FailedPrecondition):
        jobs.mirror("j", upstream(("1", "a")))


def test_messages_too_large_for_one_event_keep_their_ids(jobs):
    running(jobs)
    jobs.attach("j", "up")
    big = [(str(i), Message("JOB_MESSAGE_BASIC", "x" * 90_000, 1.0)) for i in range(1, 8)]
    jobs.mirror("j", big)
    assert len([e for e in jobs.store.events("j") if e.messages]) > 1
    assert jobs.get("j").upstream.cursor == "7"
    jobs.mirror("j", big)
    assert len(said(jobs)) == 7


@given(st.lists(st.integers(0, 10**6), min_size=2, max_size=2, unique=True))
def test_numbered_ids_order_as_numbers(pair):
    low, high = sorted(pair)
    assert is_after(str(high), str(low)) and not is_after(str(low), str(high))
    assert is_after(f"{high}.0", f"{low}.5") and not is_after(f"{low}.5", f"{high}.0")


def test_ids_that_are_not_numbers_are_new_unless_they_are_the_cursor():
    assert is_after("a", "") and is_after("b", "a") and not is_after("a", "a")


@pytest.mark.parametrize(
    ("upstream_state", "bounded", "history"),
    [
        (S.DONE, True, [S.DONE]),
        (S.FAILED, True, [S.FAILED]),
        # Cancelled or drained on the engine itself: as if through Beamjobs
        (S.CANCELLED, True, [S.CANCELLING, S.CANCELLED]),
        (S.DRAINED, False, [S.DRAINING, S.DRAINED]),
        # A batch job cannot drain: it ended, and not as asked
        (S.DRAINED, True, [S.FAILED]),
    ],
)
def test_a_job_ends_as_its_upstream_job(jobs, upstream_state, bounded, history):
    running(jobs, bounded=bounded)
    jobs.end_as_upstream("j", upstream_state, "the cause")
    assert states(jobs.store) == [S.STOPPED, S.STARTING, S.RUNNING, *history]


def test_a_cancel_through_beamjobs_ends_cancelled_when_the_upstream_says_so(jobs):
    running(jobs)
    jobs.cancel("j")
    jobs.end_as_upstream("j", S.CANCELLED, "cancelled upstream")
    assert states(jobs.store)[-2:] == [S.CANCELLING, S.CANCELLED]


def test_a_final_state_stands_whatever_the_upstream_says(jobs):
    running(jobs)
    jobs.fail("j", "engine lost")
    jobs.end_as_upstream("j", S.DONE, "")
    assert states(jobs.store)[-1] is S.FAILED


# -- choosing the engine -------------------------------------------------------------------------


def choice(*specs: str, default=None, streaming=None) -> EngineChoice:
    return EngineChoice.of("local", specs, default, streaming)


def test_a_job_runs_where_it_asks_or_on_the_default():
    engines = choice("flink=10.0.0.1:8099", "prism=p:8073", default="flink")
    assert engines.choose({}, bounded=True) == "flink"
    assert engines.choose({ENGINE_KEY: "local"}, bounded=True) == "local"
    assert engines.choose({ENGINE_KEY: "prism"}, bounded=False) == "prism"


@pytest.mark.parametrize("asked", ["spark", 7, "", "x" * 5000])
def test_an_engine_that_is_not_one_is_an_invalid_argument_naming_them(asked):
    with pytest.raises(InvalidArgument) as refused:
        choice("flink=f:1").choose({ENGINE_KEY: asked}, bounded=True)
    assert "local, flink" in refused.value.message and len(refused.value.message) < 300


def test_a_streaming_pipeline_goes_to_the_streaming_engine_or_is_refused():
    assert choice("flink=f:1", streaming="flink").choose({}, bounded=False) == "flink"
    for engines in (choice("flink=f:1"), choice()):
        with pytest.raises(FailedPrecondition) as refused:
            engines.choose({}, bounded=False)
        assert "--beamjobs_engine" in refused.value.message
    with pytest.raises(FailedPrecondition):
        choice("flink=f:1").choose({ENGINE_KEY: "local"}, bounded=False)


@pytest.mark.parametrize(
    "spec", ["flink", "flink=", "=h:1", "Flink=h:1", "flink=h", "flink=h:port", "a b=h:1"]
)
def test_malformed_engines_are_refused_saying_what_they_must_be(spec):
    with pytest.raises(ValueError, match="NAME=HOST:PORT"):
        parse_engine(spec)


def test_engines_are_named_once_and_the_builtin_name_is_taken():
    assert parse_engines("a=h:1, b=[::1]:2") == ("a=h:1", "b=[::1]:2")
    with pytest.raises(ValueError, match="once"):
        parse_engines("a=h:1,a=h:2")
    with pytest.raises(InvalidArgument):
        choice("local=h:1")
    with pytest.raises(InvalidArgument):
        choice("a=h:1", default="b")
    with pytest.raises(InvalidArgument):
        choice(streaming="local")


def test_a_flink_rest_address_is_for_an_upstream_engine():
    from beamjobs.settings import Settings

    settings = Settings(upstream_engines=("flink=j:8097",), flink_rest=("flink=m:8081",))
    assert settings.engine_choice().upstreams == {"flink": "j:8097"}
    with pytest.raises(InvalidArgument, match="spark is not one"):
        Settings(upstream_engines=("flink=j:8097",), flink_rest=("spark=m:8081",)).engine_choice()


class Recorder:
    name = "local"

    def __init__(self) -> None:
        self.started: list[tuple[str, str | None]] = []

    def start(self, job) -> None:
        self.started.append((job.job_id, None))

    def start_mirror(self, job, endpoint: str) -> None:
        self.started.append((job.job_id, endpoint))

    def stop(self, job_id: str) -> None:
        self.started.append((job_id, "stopped"))


def test_a_job_starts_where_it_was_prepared_to_run(jobs):
    recorder = Recorder()
    engines = Engines(choice("flink=f:1"), recorder, recorder)
    for job_id, engine in (("old", ""), ("here", "local"), ("there", "flink")):
        prepared(jobs.store, job_id, engine=engine)
        engines.start(jobs.get(job_id))
    assert recorder.started == [("old", None), ("here", None), ("there", "f:1")]
    # A job's Cancel reaches its upstream through its mirror, not by stopping anything here
    engines.stop(jobs.get("there"))
    assert ("there", "stopped") not in recorder.started
    # An engine taken out of the deployment since the job was prepared runs nothing
    prepared(jobs.store, "orphan", engine="spark")
    with pytest.raises(ExecutorError, match="'spark' is no longer one"):
        engines.start(jobs.get("orphan"))


def test_with_prism_built_in_streaming_pipelines_go_to_it_and_its_name_is_taken():
    # Given a deployment with Beam's Prism built in, and no streaming engine named
    engines = EngineChoice.of("local", ("flink=f:1",), None, None, prism=True)
    # Then it is an engine of the deployment, and streaming pipelines go to it
    assert engines.names() == ["local", "prism", "flink"]
    assert engines.choose({}, bounded=False) == "prism"
    assert engines.choose({ENGINE_KEY: "prism"}, bounded=True) == "prism"
    assert engines.choose({}, bounded=True) == "local"
    # Unless another streaming engine is named; and no upstream may take its name
    named = EngineChoice.of("local", ("flink=f:1",), None, "flink", prism=True)
    assert named.choose({}, bounded=False) == "flink"
    with pytest.raises(InvalidArgument, match="'prism' \\(built in\\)"):
        EngineChoice.of("local", ("prism=p:1",), None, None, prism=True)


def test_a_job_on_the_built_in_prism_gets_a_mirror_that_starts_its_own(jobs):
    recorder = Recorder()
    engines = Engines(EngineChoice.of("local", (), None, None, prism=True), recorder, recorder)
    prepared(jobs.store, "streaming", engine="prism")
    engines.start(jobs.get("streaming"))
    assert recorder.started == [("streaming", OWN_PRISM)]
    # Its Cancel reaches Prism through its mirror
    engines.stop(jobs.get("streaming"))
    assert ("streaming", "stopped") not in recorder.started


@pytest.mark.parametrize(
    ("advertised", "reached"),
    [
        ("localhost:8098", "10.0.3.4:8098"),
        ("0.0.0.0:8098", "10.0.3.4:8098"),
        ("[::]:8098", "10.0.3.4:8098"),
        ("10.0.3.4:8097", "10.0.3.4:8097"),
        ("", ""),
    ],
)
def test_a_staging_endpoint_on_the_job_servers_own_host_is_reached_there(advertised, reached):
    upstream = UpstreamJobService("10.0.3.4:8099")
    try:
        assert upstream._reachable(advertised) == reached
    finally:
        upstream.close()


def test_a_staging_endpoint_named_by_the_job_servers_own_address_is_reached_by_that_name():
    host = socket.gethostname()
    address = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    upstream = UpstreamJobService(f"{address}:8099")
    try:
        assert upstream._reachable(f"{host}:8098") == f"{host}:8098"
    finally:
        upstream.close()


@pytest.mark.parametrize("advertised", ["10.0.3.9:8098", "attacker.example:443", "[::2]:1"])
def test_a_staging_endpoint_on_another_host_is_refused(advertised):
    upstream = UpstreamJobService("10.0.3.4:8099")
    try:
        with pytest.raises(FailedPrecondition, match="sent to the engine's own host only"):
            upstream._reachable(advertised)
    finally:
        upstream.close()


def test_what_an_upstream_sends_the_mirror_is_bounded():
    engine = ScriptedUpstream()
    engine.staging_endpoint = "203.0.113.7:8098"
    upstream = UpstreamJobService(engine.endpoint)
    try:
        # Its staging endpoint elsewhere: the job's artifacts are not sent there.
        with pytest.raises(FailedPrecondition):
            upstream.prepare(b"", {}, "job")
        engine.staging_endpoint = ""
        job_id = upstream.prepare(b"", {}, "job").preparation_id
        # An answer over the bound is refused, not held.
        engine.metrics_bytes = RECEIVE_MAX_BYTES + 1
        with pytest.raises(UpstreamError, match="RESOURCE_EXHAUSTED"):
            upstream.metrics(job_id)
        # A message id too long to be a cursor orders nothing.
        engine.say("long", message_id="9" * 300)
        engine.say("short")
        followed = upstream.messages(job_id)
        items = []
        for item in followed:
            if isinstance(item, UpstreamMessage):
                items.append((item.message_id, item.text))
            if len(items) == 2:
                break
        followed.cancel()
        assert items == [("", "long"), ("2", "short")]
    finally:
        upstream.close()
        engine.stop()
