"""The executor interface: what starts and stops a job's work. How a job ended when its worker
could not say is the job aggregate's `settle` (beamjobs.domain.jobs)."""

from __future__ import annotations

from typing import Protocol

from beamjobs.domain.model import Job


class Executor(Protocol):
    # The engine's name, as a job records it ("local", "fargate").
    name: str

    def start(self, job: Job) -> None:
        """Start the job's worker, which records RUNNING and the outcome. Idempotent: a
        retried Run starts a job that is already starting again."""

    def stop(self, job_id: str) -> None:
        """Stop the job's work (cancel or drain); `settle` records the outcome once stopped."""


class ExecutorError(Exception):
    """The executor could not start or stop a job (the cause is in the message)."""
