"""A worker's task that never started (Docker Hub's pull limit, a secret not reachable yet,
no Fargate capacity) is not the job's failure: the reconcile function, asked by the state
machine's Catch, has it started again, after a doubling wait, while the job is STARTING within
its start lease. A task that started and failed, a job cancelled meanwhile, or a start lease
run out, end the job as before."""

import pytest

from beamjobs.domain.states import JobState
from beamjobs.local.invoker import InProcessInvoker
from tests.faults.harness import TASK_START_FAILURES, task_exited, task_start_failure
from tests.integration.conftest import make_job
from tests.jobstates import advance


@pytest.fixture
def reconcile(settings):
    """The reconcile function, as the state machine invokes it (under its role)."""
    from beamjobs_functions.reconcile import app

    app._settings.cache_clear()
    invoker = InProcessInvoker({"reconcile": app.lambda_handler})
    yield lambda event: invoker.invoke("reconcile", event)
    app._settings.cache_clear()


def _starting(stores, job_id):
    stores.jobs.create(make_job(job_id))
    advance(stores.jobs, job_id, JobState.STARTING)


def _texts(stores, job_id, importance):
    return [
        m.text for e in stores.jobs.events(job_id) for m in e.messages if m.importance == importance
    ]


@pytest.mark.parametrize("kind", [*TASK_START_FAILURES, "capacity"])
def test_a_task_that_never_started_is_started_again_while_the_job_is_starting(
    stores, reconcile, kind
):
    _starting(stores, "j1")
    answer = reconcile(task_start_failure("j1", kind))
    assert answer == {"retry": True, "wait_seconds": 10}
    assert stores.jobs.get("j1").state is JobState.STARTING
    [warning] = _texts(stores, "j1", "JOB_MESSAGE_WARNING")
    reason = TASK_START_FAILURES.get(kind, "Capacity is unavailable")
    assert "the worker's task did not start" in warning
    assert reason[:40] in warning
    assert warning.endswith("starting it again in 10 s")


def test_a_task_that_never_started_past_the_start_lease_fails_the_job_with_the_cause(
    monkeypatch, stores, reconcile
):
    # A start lease shorter than the first wait: starting again would outlast it.
    monkeypatch.setenv("BEAMJOBS_START_LEASE_SECONDS", "5")
    _starting(stores, "j1")
    answer = reconcile(task_start_failure("j1", "CannotPullContainer"))
    assert answer == {"retry": False, "settled": {"j1": "FAILED"}}
    [error] = _texts(stores, "j1", "JOB_MESSAGE_ERROR")
    assert "CannotPullContainerError: pull image manifest" in error


def test_a_job_cancelled_before_its_task_started_is_not_started_again(stores, reconcile):
    _starting(stores, "j1")
    advance(stores.jobs, "j1", JobState.CANCELLING)
    answer = reconcile(task_start_failure("j1", "ResourceInitialization"))
    assert answer == {"retry": False, "settled": {"j1": "CANCELLED"}}


def test_a_task_that_started_and_failed_fails_the_job_at_once(stores, reconcile):
    _starting(stores, "j1")
    answer = reconcile(task_exited("j1", 1))
    assert answer == {"retry": False, "settled": {"j1": "FAILED"}}
    assert _texts(stores, "j1", "JOB_MESSAGE_WARNING") == []


def test_each_start_again_waits_as_long_as_the_job_has_been_starting(
    monkeypatch, settings, stores, reconcile
):
    _starting(stores, "j1")
    # The job has been STARTING for 50 s when its task fails to start again.
    started = stores.jobs.get("j1").state_time
    monkeypatch.setattr(stores.jobs, "now", lambda: started + 50)
    assert reconcile(task_start_failure("j1", "CannotPullContainer"))["wait_seconds"] == 50
