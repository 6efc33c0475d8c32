"""Lost workers, and cancels racing completion: one terminal state, reported everywhere."""

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from beamjobs.app.reconcile import fail_lost_jobs
from beamjobs.app.service import JobControl
from beamjobs.aws import clients
from beamjobs.aws.dynamodb_store import DynamoJobStore
from beamjobs.domain.engines import Engines
from beamjobs.domain.executor import Leases
from beamjobs.domain.identity import LOCAL_CALLER
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.limits import Quotas
from beamjobs.domain.states import TERMINAL_STATES, JobState
from tests.integration.conftest import Clock, make_job
from tests.jobstates import Work, advance

# Silent 30 s: lost; 600 s to start; 900 s silent while its work runs.
LEASES = Leases(30, 600, 900)


@pytest.fixture
def clock():
    return Clock(1000.0)


@pytest.fixture
def jobs(settings, clock):
    return DynamoJobStore(
        clients.client("dynamodb", settings),
        settings.table_name,
        item_lifetime=86_400,
        clock=clock,
    )


def _running(jobs, job_id):
    jobs.create(make_job(job_id))
    advance(jobs, job_id, JobState.STARTING)
    advance(jobs, job_id, JobState.RUNNING)


def test_a_job_whose_worker_went_silent_fails_as_worker_lost(jobs, clock):
    _running(jobs, "silent")
    _running(jobs, "alive")
    jobs.create(make_job("never-run"))
    clock.now += 20
    Jobs(jobs).beat("alive")
    clock.now += 15  # "silent" was last heard of 35 s ago, "alive" 15 s ago
    assert fail_lost_jobs(jobs, Work(), LEASES) == {"silent": JobState.FAILED}
    assert jobs.get("alive").state is JobState.RUNNING
    assert jobs.get("never-run").state is JobState.STOPPED
    failed = jobs.events("silent")[-1]
    assert failed.state is JobState.FAILED
    assert failed.messages[0].text.startswith("worker lost: no heartbeat since 1970-01-01T00:16:40")


def test_a_silent_worker_whose_work_runs_is_lost_only_past_the_running_lease(jobs, clock):
    # Given two running jobs silent past their lease, whose work still runs (their channel
    # throttled), and one whose work cannot be told now
    for job_id in ("throttled", "hung", "unknown"):
        _running(jobs, job_id)
    work = Work(running=["throttled", "hung"], unknown=["unknown"])
    clock.now += 100
    Jobs(jobs).beat("throttled")  # ... which beats again after the throttle
    clock.now += 100
    # When the reconciler looks: none is lost
    assert fail_lost_jobs(jobs, work, LEASES) == {}
    # Then, past the running lease, the one still silent is lost, and its work stopped
    clock.now += 750
    Jobs(jobs).beat("throttled")
    assert fail_lost_jobs(jobs, work, LEASES) == {"hung": JobState.FAILED}
    assert work.stopped == ["hung"]
    assert "though its work ran (lease 900 s)" in jobs.events("hung")[-1].messages[0].text
    assert {jobs.get(j).state for j in ("throttled", "unknown")} == {JobState.RUNNING}


class ClaimedWhileAsked(Work):
    """The worker claims its job while the reconciler asks whether its work runs."""

    def __init__(self, jobs):
        super().__init__(running=["slow-start"])
        self._jobs = jobs

    def running(self, job_id):
        Jobs(self._jobs).running(job_id)
        return super().running(job_id)


def test_the_reconciler_settles_a_job_only_as_it_read_it(jobs, clock):
    # Given a job STARTING past its start lease
    jobs.create(make_job("slow-start"))
    advance(jobs, "slow-start", JobState.STARTING)
    clock.now += 700
    work = ClaimedWhileAsked(jobs)
    # When its worker claims it while the reconciler decides that it never started
    assert fail_lost_jobs(jobs, work, LEASES) == {}
    # Then the claim stands, and its work was not stopped
    assert jobs.get("slow-start").state is JobState.RUNNING
    assert work.stopped == []


def test_a_lost_worker_of_a_cancelling_job_ends_it_cancelled(jobs, clock):
    _running(jobs, "stopping")
    advance(jobs, "stopping", JobState.CANCELLING)
    clock.now += 100
    assert fail_lost_jobs(jobs, Work(), LEASES) == {"stopping": JobState.CANCELLED}


def test_finished_jobs_leave_the_active_index(jobs, clock):
    _running(jobs, "done")
    advance(jobs, "done", JobState.DONE)
    assert [j.job_id for j in jobs.active_jobs()] == []
    clock.now += 100
    assert fail_lost_jobs(jobs, Work(), LEASES) == {}


def test_a_heartbeat_tells_the_worker_its_jobs_state(jobs):
    _running(jobs, "beating")
    assert Jobs(jobs).beat("beating") is JobState.RUNNING
    advance(jobs, "beating", JobState.CANCELLING)
    assert Jobs(jobs).beat("beating") is JobState.CANCELLING


class SettlingExecutor:
    """Stops work the way the local executor does: the worker dies, the job is settled."""

    name = "settling"

    def __init__(self, jobs):
        self._jobs = jobs

    def start(self, job):
        pass

    def stop(self, job_id):
        Jobs(self._jobs).settle(job_id, "stopped")


def test_racing_cancels_and_completions_agree_on_one_terminal_state(jobs, stores):
    control = JobControl(
        Jobs(jobs),
        stores.blobs,
        Engines.only(SettlingExecutor(jobs)),
        stores.artifacts,
        Quotas(),
    )
    ids = [f"race-{i}" for i in range(100)]
    for job_id in ids:
        _running(jobs, job_id)
    barrier = threading.Barrier(2)

    def complete(job_id):
        barrier.wait()
        time.sleep(random.uniform(0, 0.15))  # a cancel takes several writes: give both a chance
        Jobs(jobs).finish(job_id)  # a cancel that won stands

    def cancel(job_id):
        barrier.wait()
        control.cancel(LOCAL_CALLER, job_id)

    with ThreadPoolExecutor(2) as pool:
        for job_id in ids:
            list(pool.map(lambda act, job=job_id: act(job), (complete, cancel)))

    listed = {j.job_id: j.state for j in jobs.list_jobs()}
    outcomes = set()
    for job_id in ids:
        states = [e.state for e in jobs.events(job_id) if e.state is not None]
        terminal = [s for s in states if s in TERMINAL_STATES]
        assert len(terminal) == 1, (job_id, states)
        assert terminal[0] == states[-1] == jobs.get(job_id).state == listed[job_id]
        outcomes.add(terminal[0])
    # Both sides won some races (else the test raced nothing).
    assert outcomes == {JobState.DONE, JobState.CANCELLED}


def test_settling_a_job_never_run_leaves_it_stopped(jobs):
    # Given a preparation, and an execution ending reported for it (stale, or replayed)
    jobs.create(make_job("prepared"))
    # Then settling it ends at once, and it stays as it was
    settled = Jobs(jobs).settle("prepared", "the job's execution was stopped")
    assert settled.state is JobState.STOPPED
    assert [e.state for e in jobs.events("prepared")] == [JobState.STOPPED]


def test_a_heartbeat_writes_only_an_item_of_its_own_outside_every_index(jobs, settings):
    _running(jobs, "beating")
    db = clients.client("dynamodb", settings)

    def item(sk):
        key = {"pk": {"S": "job#beating"}, "sk": {"S": sk}}
        return db.get_item(TableName=settings.table_name, Key=key, ConsistentRead=True)["Item"]

    record = item("job")
    Jobs(jobs).beat("beating")
    assert item("job") == record  # the record, and so both indexes, untouched
    assert not {"gsi1pk", "gsi1sk", "active"} & item("beat").keys()
    assert jobs.heartbeats(["beating", "never-beat"]) == {"beating": 1000.0}
