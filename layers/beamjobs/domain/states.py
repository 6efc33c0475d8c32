"""The job state machine: which transitions are allowed, which states are final."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Beam's JobState.Enum, by name (the wire number lives in the generated classes)."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    DRAINING = "DRAINING"
    DRAINED = "DRAINED"


TERMINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.DRAINED})

# A job that is being cancelled or drained may still finish or fail on its own before the worker
# stops: whichever terminal state is written first wins (every write is conditional).
_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.STOPPED: frozenset({JobState.STARTING, JobState.CANCELLED}),
    JobState.STARTING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLING}),
    JobState.RUNNING: frozenset(
        {JobState.DONE, JobState.FAILED, JobState.CANCELLING, JobState.DRAINING}
    ),
    JobState.CANCELLING: frozenset({JobState.CANCELLED, JobState.DONE, JobState.FAILED}),
    JobState.DRAINING: frozenset(
        {JobState.DRAINED, JobState.DONE, JobState.FAILED, JobState.CANCELLING}
    ),
}


def is_terminal(state: JobState) -> bool:
    return state in TERMINAL_STATES


def can_transition(current: JobState, to: JobState) -> bool:
    """True when a job in `current` may move to `to`. Terminal states never move."""
    return to in _ALLOWED.get(current, frozenset())
