"""Every rule of the job aggregate, on the in-memory store (sockets off)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beamjobs.domain.errors import Conflict, FailedPrecondition, NotFound, ResourceExhausted
from beamjobs.domain.identity import Caller
from beamjobs.domain.jobs import (
    PREPARATION_WINDOW_SECONDS,
    SLOT_GRACE_SECONDS,
    STAGING_LEASE_SECONDS,
    Jobs,
    TransitionRejected,
    item_lifetime,
    reported,
    slot_holder,
    start_rule,
)
from beamjobs.domain.model import Change, Job, Message
from beamjobs.domain.states import TERMINAL_STATES, JobState, can_transition
from beamjobs.domain.store import JobStore
from beamjobs.local.memory_store import MemoryJobStore
from tests.jobstates import advance, leased

S = JobState
TOKEN_SHA = "ab" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def prepared(store: JobStore, job_id: str = "j", **fields: object) -> Job:
    """Given a job as Prepare records it."""
    now = store.now()
    values: dict[str, object] = {
        "job_name": job_id,
        "state": S.STOPPED,
        "state_time": now,
        "seq": 1,
        "created_at": now,
        "pipeline_ref": "pipelines/p",
        "options_ref": "options/o",
        "staging_token_sha256": TOKEN_SHA,
        **fields,
    }
    job = Job(job_id=job_id, **values)  # type: ignore[arg-type]
    store.create(job)
    return job


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryJobStore:
    return MemoryJobStore(clock=clock)


@pytest.fixture
def jobs(store: MemoryJobStore) -> Jobs:
    return Jobs(store)


def states(store: JobStore, job_id: str = "j") -> list[JobState]:
    return [e.state for e in store.events(job_id) if e.state is not None]


def in_state(store: JobStore, state: JobState, job_id: str = "j", **fields: object) -> None:
    """Given a job in `state`, reached the usual way."""
    prepared(store, job_id, **fields)
    path = {
        S.STOPPED: [],
        S.STARTING: [S.STARTING],
        S.RUNNING: [S.STARTING, S.RUNNING],
        S.CANCELLING: [S.STARTING, S.RUNNING, S.CANCELLING],
        S.DRAINING: [S.STARTING, S.RUNNING, S.DRAINING],
        S.DONE: [S.STARTING, S.RUNNING, S.DONE],
        S.FAILED: [S.STARTING, S.RUNNING, S.FAILED],
        S.CANCELLED: [S.STARTING, S.RUNNING, S.CANCELLING, S.CANCELLED],
        S.DRAINED: [S.STARTING, S.RUNNING, S.DRAINING, S.DRAINED],
    }[state]
    if path:
        advance(store, job_id, *path)


# -- start ---------------------------------------------------------------------------------------


def test_start_moves_a_preparation_to_starting_once_and_records_when(jobs, store, clock):
    prepared(store)
    clock.now += 3
    job = jobs.start("j")
    assert (job.state, job.started_at) == (S.STARTING, clock.now)
    assert states(store) == [S.STOPPED, S.STARTING]


@pytest.mark.parametrize("state", [S.STARTING, S.RUNNING, S.DONE, S.FAILED, S.CANCELLED])
def test_a_retried_run_answers_the_started_job_and_writes_nothing(jobs, store, state):
    # Given a job that was started (a Run whose answer was lost, retried with a new request id)
    in_state(store, state)
    before = store.events("j")
    # When Run comes again, then it answers the job as it is
    assert jobs.start("j").state is state
    assert store.events("j") == before


def test_a_preparation_cancelled_before_it_ran_cannot_run(jobs, store):
    prepared(store)
    jobs.cancel("j")
    with pytest.raises(FailedPrecondition, match="never ran"):
        jobs.start("j")
    assert states(store) == [S.STOPPED, S.CANCELLED]


def test_a_preparation_with_unstaged_artifacts_cannot_run(jobs, store):
    prepared(store, unstaged=("extra_packages/a.tar.gz",))
    with pytest.raises(FailedPrecondition, match="never staged: extra_packages/a.tar.gz"):
        jobs.start("j")
    assert states(store) == [S.STOPPED]


def test_a_preparation_runs_within_its_window_and_not_after(jobs, store, clock):
    prepared(store, "fresh")
    prepared(store, "stale")
    clock.now += PREPARATION_WINDOW_SECONDS
    assert jobs.start("fresh").state is S.STARTING
    clock.now += 1
    with pytest.raises(FailedPrecondition, match="expired"):
        jobs.start("stale")


def test_racing_starts_start_once(jobs, store):
    # Given a rival Run that appends STARTING between this one's read and its write
    prepared(store)

    def rival_starts(job_id: str) -> None:
        store.before_append = None
        Jobs(store).start(job_id)

    store.before_append = rival_starts
    # When this one writes, it loses the slot, reads again, and answers the started job
    decided = jobs.apply("j", start_rule)
    assert (decided.job.state, decided.changed) == (S.STARTING, False)
    assert states(store) == [S.STOPPED, S.STARTING]


# -- running -------------------------------------------------------------------------------------


def test_running_claims_a_starting_job_for_its_worker(jobs, store):
    in_state(store, S.STARTING)
    job = jobs.running("j")
    assert job is not None and job.state is S.RUNNING


@pytest.mark.parametrize("state", [S.RUNNING, S.CANCELLING, S.CANCELLED, S.FAILED])
def test_a_worker_does_not_run_a_job_claimed_or_stopped_meanwhile(jobs, store, state):
    in_state(store, state)
    assert jobs.running("j") is None
    assert states(store)[-1] is state


def test_a_claim_sent_again_is_claimed_again_and_another_is_not(jobs, store):
    in_state(store, S.STARTING)
    assert jobs.running("j", claim="first") is not None
    # The same claim, its answer lost, sent again: it still runs (and nothing is appended).
    again = jobs.running("j", claim="first")
    assert again is not None and again.state is S.RUNNING
    # Another claim (a second task given the same job) does not run it; nor does one sent
    # again after the job moved on.
    assert jobs.running("j", claim="second") is None
    jobs.cancel("j")
    assert jobs.running("j", claim="first") is None
    assert states(store) == [S.STOPPED, S.STARTING, S.RUNNING, S.CANCELLING]


def test_a_worker_handed_a_stale_job_reads_again_and_does_not_run_it(jobs, store):
    in_state(store, S.STARTING)
    handed = store.get("j")
    jobs.cancel("j")
    assert jobs.running("j", known=handed) is None
    assert states(store)[-1] is S.CANCELLING


# -- finish and fail -----------------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.RUNNING, S.CANCELLING, S.DRAINING])
def test_a_pipeline_that_succeeded_is_done(jobs, store, state):
    in_state(store, state)
    assert jobs.finish("j").state is S.DONE


@pytest.mark.parametrize("state", [S.CANCELLED, S.FAILED, S.DRAINED, S.DONE])
def test_a_final_state_stands_against_a_late_outcome(jobs, store, state):
    in_state(store, state)
    assert jobs.finish("j").state is state
    assert jobs.fail("j", "late").state is state
    assert states(store).count(state) == 1


def test_a_job_never_run_cannot_finish(jobs, store):
    prepared(store)
    with pytest.raises(TransitionRejected, match="cannot move to DONE"):
        jobs.finish("j")


def test_a_failure_and_its_cause_are_one_event(jobs, store, clock):
    in_state(store, S.RUNNING)
    jobs.fail("j", "Traceback: ValueError")
    last = store.events("j")[-1]
    assert last.state is S.FAILED
    assert last.messages == (Message("JOB_MESSAGE_ERROR", "Traceback: ValueError", clock.now),)


def test_a_failed_job_keeps_its_cause_at_a_glance_for_lists(jobs, store):
    in_state(store, S.RUNNING)
    cause = (
        "Traceback (most recent call last):\n"
        '  File "/home/ann/count.py", line 3, in parse\n'
        "ValueError: not a number [while running 'Parse']"
    )
    failed = jobs.fail("j", cause)
    assert (
        failed.failure
        == "ValueError: not a number [while running 'Parse'] (at count.py:3 in parse)"
    )
    assert store.get("j").failure == failed.failure


def test_a_job_that_could_not_start_fails_from_starting(jobs, store):
    in_state(store, S.STARTING)
    assert jobs.fail("j", "StartExecution failed").state is S.FAILED


# -- settle --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "settled"),
    [
        (S.CANCELLING, S.CANCELLED),
        (S.DRAINING, S.DRAINED),
        (S.RUNNING, S.FAILED),
        (S.STARTING, S.FAILED),
        (S.STOPPED, S.STOPPED),
        (S.DONE, S.DONE),
        (S.CANCELLED, S.CANCELLED),
    ],
)
def test_settling_a_stopped_worker_ends_its_job_as_it_was_going(jobs, store, state, settled):
    in_state(store, state)
    assert jobs.settle("j", "worker lost").state is settled


def test_settling_a_job_whose_worker_was_not_stopping_gives_the_cause(jobs, store):
    in_state(store, S.RUNNING)
    jobs.settle("j", "worker lost: no heartbeat")
    assert [m.text for m in store.events("j")[-1].messages] == ["worker lost: no heartbeat"]


# -- cancel and drain ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "after"),
    [
        (S.STOPPED, S.CANCELLED),
        (S.STARTING, S.CANCELLING),
        (S.RUNNING, S.CANCELLING),
        (S.DRAINING, S.CANCELLING),
        (S.CANCELLING, S.CANCELLING),
        (S.DONE, S.DONE),
        (S.FAILED, S.FAILED),
        (S.CANCELLED, S.CANCELLED),
    ],
)
def test_cancel(jobs, store, state, after):
    in_state(store, state, bounded=False)
    assert jobs.cancel("j").state is after
    assert states(store).count(after) == 1


def test_a_cancel_racing_a_finish_answers_the_finish(jobs, store):
    # Given a worker that records DONE between the Cancel's read and its write
    in_state(store, S.RUNNING)

    def worker_finishes(job_id: str) -> None:
        store.before_append = None
        Jobs(store).finish(job_id)

    store.before_append = worker_finishes
    # Then the Cancel decides again on DONE, and writes nothing
    assert jobs.cancel("j").state is S.DONE
    assert states(store)[-2:] == [S.RUNNING, S.DONE]


def test_a_batch_pipeline_cannot_be_drained(jobs, store):
    in_state(store, S.RUNNING, bounded=True)
    with pytest.raises(FailedPrecondition, match="batch"):
        jobs.drain("j")


@pytest.mark.parametrize(("state", "after"), [(S.RUNNING, S.DRAINING), (S.DRAINING, S.DRAINING)])
def test_drain_a_streaming_job(jobs, store, state, after):
    in_state(store, state, bounded=False)
    assert jobs.drain("j").state is after


@pytest.mark.parametrize("state", [S.STOPPED, S.STARTING, S.CANCELLING, S.DONE, S.DRAINED])
def test_only_a_running_streaming_job_drains(jobs, store, state):
    in_state(store, state, bounded=False)
    with pytest.raises(FailedPrecondition, match="only a RUNNING job"):
        jobs.drain("j")


# -- stage, say, beat ----------------------------------------------------------------------------


def test_staging_records_the_staged_pipeline_and_what_is_left(jobs, store):
    prepared(store, unstaged=("a.whl", "b.whl"))
    jobs.lease_staging("j", TOKEN_SHA, "first")
    jobs.stage("j", "first", "pipelines/half", ["b.whl"])
    assert (store.get("j").pipeline_ref, store.get("j").unstaged) == ("pipelines/half", ("b.whl",))
    # An incomplete session let go of the token: another one may take it, and complete.
    jobs.lease_staging("j", TOKEN_SHA, "second")
    jobs.stage("j", "second", "pipelines/all", [])
    assert store.get("j").staging_spent
    assert jobs.start("j").pipeline_ref == "pipelines/all"


@pytest.mark.parametrize("state", [S.STARTING, S.RUNNING, S.CANCELLED, S.DONE])
def test_artifacts_cannot_change_once_a_job_ran_or_was_cancelled(jobs, store, state):
    in_state(store, state)
    with pytest.raises(FailedPrecondition, match="can no longer change"):
        jobs.lease_staging("j", TOKEN_SHA, "late")
    leased(store, "j", "late")
    with pytest.raises(FailedPrecondition, match="can no longer change"):
        jobs.stage("j", "late", "pipelines/late", [])
    assert store.get("j").pipeline_ref == "pipelines/p"


def test_the_staging_token_must_be_the_preparers_or_the_job_is_not_found(jobs, store):
    prepared(store)
    with pytest.raises(NotFound, match="'j' does not exist"):
        jobs.lease_staging("j", "cd" * 32, "guess")
    assert store.get("j").staging_lease is None


def test_a_second_session_is_aborted_while_the_first_holds_the_token(jobs, store, clock):
    prepared(store)
    jobs.lease_staging("j", TOKEN_SHA, "first")
    with pytest.raises(Conflict, match="another staging session holds"):
        jobs.lease_staging("j", TOKEN_SHA, "second")
    with pytest.raises(Conflict, match="no longer holds"):
        jobs.stage("j", "second", "pipelines/q", [])
    # The holder extends its lease; once it lapses (the session died), another takes it.
    clock.now += STAGING_LEASE_SECONDS - 1
    jobs.lease_staging("j", TOKEN_SHA, "first")
    clock.now += STAGING_LEASE_SECONDS - 1
    with pytest.raises(Conflict):
        jobs.lease_staging("j", TOKEN_SHA, "second")
    clock.now += 2
    assert jobs.lease_staging("j", TOKEN_SHA, "second").staging_lease.session == "second"
    with pytest.raises(Conflict, match="no longer holds"):
        jobs.stage("j", "first", "pipelines/q", [])


def test_a_token_whose_session_completed_is_spent(jobs, store):
    prepared(store)
    jobs.lease_staging("j", TOKEN_SHA, "first")
    jobs.stage("j", "first", "pipelines/all", [])
    with pytest.raises(FailedPrecondition, match="was used"):
        jobs.lease_staging("j", TOKEN_SHA, "again")


def test_messages_are_said_in_order_in_any_state(jobs, store):
    in_state(store, S.DONE)
    said = [Message("JOB_MESSAGE_BASIC", f"m{i}", float(i)) for i in range(5)]
    jobs.say("j", said)
    assert [m for e in store.events("j") for m in e.messages] == said


def test_messages_sent_again_are_appended_once_even_past_another_writer(jobs, store):
    in_state(store, S.STARTING)
    jobs.running("j", claim="claim")
    said = [Message("JOB_MESSAGE_BASIC", "once", 1.0)]
    jobs.say("j", said, report="r1")
    jobs.cancel("j")  # another writer's event comes between the call and its retry
    jobs.say("j", said, report="r1")
    # A call of several batches (each an event), sent again: each batch once.
    many = [Message("JOB_MESSAGE_BASIC", "€" * 100_000, 2.0) for _ in range(4)]
    jobs.say("j", many, report="r2")
    batches = len(store.events("j"))
    jobs.say("j", many, report="r2")
    assert len(store.events("j")) == batches > 5
    # A new call with the same text is new messages.
    jobs.say("j", said, report="r3")
    texts = [m.text for e in store.events("j") for m in e.messages if m.text == "once"]
    assert texts == ["once", "once"]


def test_a_heartbeat_is_recorded_and_answers_the_state(jobs, store, clock):
    in_state(store, S.CANCELLING)
    assert jobs.beat("j") is S.CANCELLING
    assert store.heartbeats(["j", "other"]) == {"j": clock.now}


# -- the retry ------------------------------------------------------------------------------------


def test_a_writer_that_always_loses_gives_up_with_a_conflict(jobs, store):
    # Given a rival that appends a message before every one of this writer's appends
    in_state(store, S.RUNNING)

    def rival(job_id: str) -> None:
        saved, store.before_append = store.before_append, None
        store.append(store.get(job_id), Change(messages=(Message("JOB_MESSAGE_BASIC", "x", 0),)))
        store.before_append = saved

    store.before_append = rival
    with pytest.raises(Conflict, match="too many concurrent writers"):
        jobs.cancel("j")
    assert S.CANCELLING not in states(store)


def test_items_outlive_the_longest_job_by_the_retention():
    lifetime = item_lifetime(retention_seconds=30 * 86_400, max_job_seconds=86_400)
    # An item written at Prepare, of a job run at the window's end for the longest time:
    ends = PREPARATION_WINDOW_SECONDS + 86_400
    assert lifetime - ends >= 30 * 86_400


# -- whatever the order of verbs -----------------------------------------------------------------

VERBS = st.sampled_from(
    ["start", "running", "finish", "fail", "cancel", "drain", "settle", "say", "lease", "stage"]
)


@settings(max_examples=300, deadline=None)
@given(verbs=st.lists(VERBS, max_size=12), bounded=st.booleans())
def test_any_sequence_of_verbs_keeps_the_job_contract(verbs, bounded):
    store = MemoryJobStore()
    jobs = Jobs(store)
    prepared(store, bounded=bounded)
    for verb in verbs:
        call = {
            "start": lambda: jobs.start("j"),
            "running": lambda: jobs.running("j"),
            "finish": lambda: jobs.finish("j"),
            "fail": lambda: jobs.fail("j", "boom"),
            "cancel": lambda: jobs.cancel("j"),
            "drain": lambda: jobs.drain("j"),
            "settle": lambda: jobs.settle("j", "lost"),
            "say": lambda: jobs.say("j", [Message("JOB_MESSAGE_BASIC", "hi", 0.0)]),
            "lease": lambda: jobs.lease_staging("j", TOKEN_SHA, "s"),
            "stage": lambda: jobs.stage("j", "s", "pipelines/q", []),
        }[verb]
        # Refused (a stage without the lease is ABORTED): nothing written (see below).
        with contextlib.suppress(FailedPrecondition, Conflict):
            call()
    seen = states(store)
    # Every move is one the state machine allows; a final state is the last and only one.
    assert all(can_transition(a, b) for a, b in zip(seen, seen[1:], strict=False))
    terminal = [s for s in seen if s in TERMINAL_STATES]
    assert len(terminal) <= 1 and (not terminal or seen[-1] == terminal[0])
    job = store.get("j")
    assert job.state is seen[-1]
    assert (job.started_at is not None) == (S.STARTING in seen)
    assert [e.seq for e in store.events("j")] == list(range(1, job.seq + 1))


# -- ownership ------------------------------------------------------------------------------------

ALICE = Caller("arn:aws:iam::111122223333:user/alice")
BOB = Caller("arn:aws:iam::111122223333:user/bob")


@pytest.mark.parametrize(
    "verb",
    [
        lambda jobs, caller: jobs.get("j", caller),
        lambda jobs, caller: jobs.start("j", caller),
        lambda jobs, caller: jobs.cancel("j", caller),
        lambda jobs, caller: jobs.drain("j", caller),
        lambda jobs, caller: jobs.lease_staging("j", TOKEN_SHA, "s", caller),
    ],
    ids=["get", "start", "cancel", "drain", "lease_staging"],
)
def test_another_callers_job_is_not_found_and_nothing_is_appended(store, verb):
    prepared(store, owner=ALICE.principal, bounded=False)
    with pytest.raises(NotFound, match="'j' does not exist"):
        verb(Jobs(store), BOB)
    assert [e.seq for e in store.events("j")] == [1]
    # Its owner and an admin find it (a drain of a job not running is refused, not hidden).
    for finder in (ALICE, Caller("arn:aws:iam::111122223333:user/ops", admin=True)):
        with contextlib.suppress(FailedPrecondition):
            verb(Jobs(store), finder)


def test_recent_jobs_are_the_callers_own_or_every_one_for_an_admin(store, clock):
    for job_id, owner in (("a1", ALICE), ("b1", BOB), ("a2", ALICE)):
        clock.now += 1
        prepared(store, job_id, owner=owner.principal)
    jobs = Jobs(store)
    assert [j.job_id for j in jobs.recent(10, ALICE)] == ["a2", "a1"]
    assert [j.job_id for j in jobs.recent(10, BOB)] == ["b1"]
    assert [j.job_id for j in jobs.recent(2, Caller("ops", admin=True))] == ["a2", "b1"]


# -- concurrent jobs: slots ----------------------------------------------------------------------


def test_a_run_past_the_owners_slots_is_refused_and_leaves_the_job_unstarted(store, jobs):
    for job_id in ("a", "b", "c"):
        prepared(store, job_id, owner="alice")
    jobs.start("a", concurrent_jobs=2)
    jobs.start("b", concurrent_jobs=2)
    with pytest.raises(ResourceExhausted, match="concurrent jobs is 2 per principal"):
        jobs.start("c", concurrent_jobs=2)
    assert store.get("c").state is S.STOPPED
    prepared(store, "d", owner="bob")  # another owner's slots are their own
    jobs.start("d", concurrent_jobs=2)


def test_a_run_retried_for_a_started_job_takes_no_second_slot(store, jobs):
    prepared(store, "a", owner="alice")
    prepared(store, "b", owner="alice")
    jobs.start("a", concurrent_jobs=1)
    assert jobs.start("a", concurrent_jobs=1).state is S.STARTING
    with pytest.raises(ResourceExhausted):
        jobs.start("b", concurrent_jobs=1)


def test_a_run_refused_by_the_rules_gives_its_slot_back(store, jobs):
    prepared(store, "a", owner="alice", unstaged=("x.whl",))
    prepared(store, "b", owner="alice")
    with pytest.raises(FailedPrecondition, match="never staged"):
        jobs.start("a", concurrent_jobs=1)
    jobs.start("b", concurrent_jobs=1)


def test_a_slot_whose_give_back_was_lost_is_freed_by_the_next_run_it_would_refuse(
    monkeypatch, store, jobs
):
    prepared(store, "a", owner="alice")
    prepared(store, "b", owner="alice")
    jobs.start("a", concurrent_jobs=1)
    jobs.running("a")
    with monkeypatch.context() as killed:  # the writer dies just after the job's end
        killed.setattr(store, "give_back_slot", lambda *args, **kwargs: None)
        jobs.finish("a")
    assert jobs.start("b", concurrent_jobs=1).state is S.STARTING


def test_a_slot_taken_by_a_run_that_died_before_starting_is_freed_after_the_grace(
    clock, store, jobs
):
    prepared(store, "a", owner="alice")
    prepared(store, "b", owner="alice")
    store.take_slot(slot_holder("alice"), "a", 1)  # and then the Run died
    with pytest.raises(ResourceExhausted):
        jobs.start("b", concurrent_jobs=1)
    clock.now += SLOT_GRACE_SECONDS + 1
    assert jobs.start("b", concurrent_jobs=1).state is S.STARTING


@pytest.mark.parametrize("end", ["finish", "fail", "cancel", "drain"])
def test_every_end_of_a_run_job_gives_its_slot_back(store, jobs, end):
    prepared(store, "a", owner="alice", bounded=False)
    prepared(store, "b", owner="alice")
    jobs.start("a", concurrent_jobs=1)
    jobs.running("a")
    if end == "finish":
        jobs.finish("a")
    elif end == "fail":
        jobs.fail("a", "boom")
    else:
        (jobs.cancel if end == "cancel" else jobs.drain)("a")
        jobs.settle("a", "stopped")
    assert store.get("a").state in TERMINAL_STATES
    assert jobs.start("b", concurrent_jobs=1).state is S.STARTING


@pytest.mark.parametrize(
    ("last", "report", "seen"),
    [
        (None, "c", False),
        ("c", None, False),
        ("c", "c", True),
        ("c/with/slashes", "c/with/slashes", True),
        ("r/2", "r/1", True),
        ("r/1", "r/2", False),
        ("r/1", "s/1", False),
        ("r/x", "r/1", False),
    ],
)
def test_a_report_is_known_by_its_id_or_a_later_batch_of_its_call(store, last, report, seen):
    assert reported(prepared(store, last_report=last), report) is seen
