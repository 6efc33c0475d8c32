import pytest

from beamjobs.domain.states import TERMINAL_STATES, JobState, can_transition, is_terminal


def test_the_happy_path_is_allowed():
    path = [JobState.STOPPED, JobState.STARTING, JobState.RUNNING, JobState.DONE]
    assert all(can_transition(a, b) for a, b in zip(path, path[1:], strict=False))


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
def test_terminal_states_never_move(terminal):
    assert is_terminal(terminal)
    assert not any(can_transition(terminal, to) for to in JobState)


def test_failed_is_never_overwritten():
    assert not any(can_transition(JobState.FAILED, to) for to in JobState)


def test_a_never_run_job_is_cancelled_directly_and_a_running_one_goes_through_cancelling():
    assert can_transition(JobState.STOPPED, JobState.CANCELLED)
    assert not can_transition(JobState.RUNNING, JobState.CANCELLED)
    assert can_transition(JobState.RUNNING, JobState.CANCELLING)
    assert can_transition(JobState.CANCELLING, JobState.CANCELLED)


def test_draining_ends_drained_and_only_a_running_job_drains():
    assert can_transition(JobState.RUNNING, JobState.DRAINING)
    assert can_transition(JobState.DRAINING, JobState.DRAINED)
    assert not can_transition(JobState.STOPPED, JobState.DRAINING)
    assert not can_transition(JobState.STARTING, JobState.DRAINING)


def test_a_job_cannot_skip_starting():
    assert not can_transition(JobState.STOPPED, JobState.RUNNING)
    assert not can_transition(JobState.STOPPED, JobState.DONE)
