"""Time as AWS has it: every process has its own clock (skewed by a few seconds), and DynamoDB's
TTL deletes an item once its expiry passes, whatever its job is doing."""

import pytest

from beamjobs.app.reconcile import fail_lost_jobs
from beamjobs.aws import clients
from beamjobs.aws.dynamodb_store import DynamoJobStore
from beamjobs.domain.executor import Leases
from beamjobs.domain.jobs import PREPARATION_WINDOW_SECONDS, Jobs, item_lifetime
from beamjobs.domain.states import JobState
from tests.integration.conftest import Clock, make_job
from tests.jobstates import Work, advance

LEASE, HEARTBEAT, SKEW = 30.0, 5.0, 10.0
DAY = 86_400


class Skewed:
    """Another process's clock: `by` seconds off the reference."""

    def __init__(self, clock: Clock, by: float) -> None:
        self._clock, self._by = clock, by

    def __call__(self) -> float:
        return self._clock() + self._by


@pytest.fixture
def clock():
    return Clock(1_000_000.0)


def _store(settings, clock, lifetime=DAY):
    return DynamoJobStore(
        clients.client("dynamodb", settings),
        settings.table_name,
        item_lifetime=lifetime,
        clock=clock,
    )


def _reconcile(store):
    return fail_lost_jobs(store, Work(), Leases(LEASE, 900, 900))


def test_a_worker_whose_clock_is_behind_is_not_lost_while_it_beats(settings, clock):
    # Given a reconciler, and a worker whose clock is 10 s behind it
    reconciler = _store(settings, clock)
    worker = _store(settings, Skewed(clock, -SKEW))
    reconciler.create(make_job("behind", created=clock()))
    advance(worker, "behind", JobState.STARTING, JobState.RUNNING)
    # When the worker beats every 5 s for two minutes, and the reconciler checks each time
    for _ in range(24):
        clock.now += HEARTBEAT
        Jobs(worker).beat("behind")
        # Then the job is never lost
        assert _reconcile(reconciler) == {}
    assert reconciler.get("behind").state is JobState.RUNNING


def test_a_dead_worker_whose_clock_was_ahead_is_lost_once_the_skew_has_passed(settings, clock):
    # Given a worker whose clock is 10 s ahead, which beats once and dies
    reconciler = _store(settings, clock)
    worker = _store(settings, Skewed(clock, SKEW))
    reconciler.create(make_job("ahead", created=clock()))
    advance(worker, "ahead", JobState.STARTING, JobState.RUNNING)
    Jobs(worker).beat("ahead")
    # When the lease passes, it is not lost yet (its last beat reads as 10 s later)...
    clock.now += LEASE
    assert _reconcile(reconciler) == {}
    # ...and once the skew has passed too, it is
    clock.now += SKEW + 1
    assert _reconcile(reconciler) == {"ahead": JobState.FAILED}


def test_ttl_never_deletes_an_active_jobs_history(settings, clock):
    # Given items that expire as the deployment sets them (30 days' retention, jobs of at most
    # a day), and a job prepared now, run at the end of its preparation window, for a day
    lifetime = item_lifetime(retention_seconds=30 * DAY, max_job_seconds=DAY)
    store = _store(settings, clock, lifetime)
    jobs = Jobs(store)
    store.create(make_job("long", created=clock()))
    clock.now += PREPARATION_WINDOW_SECONDS
    jobs.start("long")
    jobs.running("long")
    clock.now += DAY
    jobs.beat("long")
    ended = jobs.finish("long").state_time
    # Then every item of the job, its first event included, expires 30 days after it ended
    # at the earliest (TTL counted from Prepare would have deleted it while it ran)
    items = clients.client("dynamodb", settings).query(
        TableName=settings.table_name,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "job#long"}},
    )["Items"]
    assert {item["sk"]["S"][:3] for item in items} == {"ev#", "job", "bea"}
    assert min(int(item["expires_at"]["N"]) for item in items) >= ended + 30 * DAY
