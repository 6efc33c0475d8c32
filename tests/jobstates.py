"""Test set-up: put a job in a state by appending to its log as its writers would, without the
aggregate's rules (those are tested on their own, in tests/unit/test_jobs.py)."""

from __future__ import annotations

from collections.abc import Sequence

from beamjobs.domain.model import Change, Job, Message, StagingLease
from beamjobs.domain.states import JobState
from beamjobs.domain.store import JobStore


def advance(
    store: JobStore, job_id: str, *states: JobState, messages: Sequence[Message] = ()
) -> Job:
    """Append each state in turn (the last with `messages`); return the job after them."""
    job = store.get(job_id)
    for index, state in enumerate(states):
        last = index == len(states) - 1
        job = store.append(job, Change(state=state, messages=tuple(messages) if last else ()))
    return job


def leased(store: JobStore, job_id: str, session: str = "session") -> str:
    """Give `session` the job's staging lease (for tests of what a session records)."""
    store.append(store.get(job_id), Change(lease=StagingLease(session, store.now() + 300)))
    return session


class Work:
    """A job's work as a test says it is: `running` jobs run (the rest ended, or never
    started), `unknown` ones cannot be told; `stopped` records what was stopped."""

    def __init__(self, running: Sequence[str] = (), unknown: Sequence[str] = ()) -> None:
        self.running_jobs = set(running)
        self.unknown = set(unknown)
        self.stopped: list[str] = []

    def running(self, job_id: str) -> bool | None:
        return None if job_id in self.unknown else job_id in self.running_jobs

    def stop(self, job_id: str) -> None:
        self.stopped.append(job_id)
