"""The executor interface (what starts and stops a job's work), and the one rule for recording
how a job ended when its worker could not record it itself."""

from __future__ import annotations

from typing import Protocol

from beamjobs.states import JobState, is_terminal
from beamjobs.store import Job, JobStore, Message, TransitionRejected


class Executor(Protocol):
    def start(self, job: Job) -> None:
        """Start the job's worker. The worker records RUNNING and the outcome."""

    def stop(self, job_id: str) -> None:
        """Stop the job's work (cancel or drain); `settle` records the outcome once stopped."""


class ExecutorError(Exception):
    """The executor could not start or stop a job (the cause is in the message)."""


def settle(store: JobStore, job_id: str, cause: str) -> JobState:
    """Record the end of a job whose work has stopped: CANCELLED after CANCELLING, DRAINED after
    DRAINING, and FAILED with `cause` for a job that was not being stopped. A terminal state
    the worker already recorded is kept (conditional writes pick one winner), and so is a job
    that was never run."""
    while True:
        job = store.get(job_id)
        # A job never run (STOPPED) has no work to have ended: an execution ending for it (a
        # stale or replayed event) leaves it as it is.
        if is_terminal(job.state) or job.state is JobState.STOPPED:
            return job.state
        if job.state is JobState.CANCELLING:
            to, messages = JobState.CANCELLED, list[Message]()
        elif job.state is JobState.DRAINING:
            to, messages = JobState.DRAINED, []
        else:
            to = JobState.FAILED
            messages = [Message(importance="JOB_MESSAGE_ERROR", text=cause, time=store.now())]
        try:
            return store.transition(job_id, to, only_from=[job.state], messages=messages).state
        except TransitionRejected:
            continue  # the state moved meanwhile: decide again
