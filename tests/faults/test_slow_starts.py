"""Fargate starts take 30 s to 10 min (more with a large SDK sidecar image): a job whose
worker has not started yet is not "worker lost" until its start lease, counted from STARTING,
while a worker that started and then went silent is lost after the ordinary lease."""

import pytest

from beamjobs.app.reconcile import fail_lost_jobs
from beamjobs.aws import clients
from beamjobs.aws.dynamodb_store import DynamoJobStore
from beamjobs.domain.executor import Leases
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.states import JobState
from tests.integration.conftest import Clock, make_job
from tests.jobstates import Work, advance

LEASE, START_LEASE = 30.0, 900.0


@pytest.fixture
def clock():
    return Clock(1000.0)


@pytest.fixture
def jobs(settings, clock):
    return DynamoJobStore(
        clients.client("dynamodb", settings), settings.table_name, item_lifetime=86_400, clock=clock
    )


def _reconcile(jobs):
    return fail_lost_jobs(jobs, Work(), Leases(LEASE, START_LEASE, 900))


def test_a_fargate_start_of_ten_minutes_is_not_worker_lost(jobs, clock):
    # Given a job STARTING whose task takes 10 minutes to start
    jobs.create(make_job("slow"))
    advance(jobs, "slow", JobState.STARTING)
    # When the reconciler runs every minute meanwhile
    for _ in range(10):
        clock.now += 60
        assert _reconcile(jobs) == {}
    # Then the job is still STARTING, and its worker can take it from there
    assert jobs.get("slow").state is JobState.STARTING
    assert advance(jobs, "slow", JobState.RUNNING).state is JobState.RUNNING


def test_a_start_that_never_comes_fails_after_the_start_lease_naming_it(jobs, clock):
    jobs.create(make_job("never"))
    advance(jobs, "never", JobState.STARTING)
    clock.now += START_LEASE + 1
    assert _reconcile(jobs) == {"never": JobState.FAILED}
    failed = jobs.events("never")[-1]
    assert failed.state is JobState.FAILED
    assert "never started after STARTING" in failed.messages[0].text
    assert f"lease {START_LEASE:g} s" in failed.messages[0].text


def test_a_started_worker_gone_silent_is_lost_after_the_ordinary_lease(jobs, clock):
    # Given a worker that started, beat once, and went silent (its task died)
    jobs.create(make_job("silent"))
    advance(jobs, "silent", JobState.STARTING)
    advance(jobs, "silent", JobState.RUNNING)
    Jobs(jobs).beat("silent")
    clock.now += LEASE + 1
    # Then the start lease does not shelter it
    assert _reconcile(jobs) == {"silent": JobState.FAILED}
