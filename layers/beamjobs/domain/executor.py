"""The executor interface: what starts and stops a job's work, and says whether it still runs.
How a job ended when its worker could not say is the job aggregate's `settle`
(beamjobs.domain.jobs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from beamjobs.domain.model import Job

# After SIGTERM, a stopped worker (its process group) has this long to end before it is killed.
STOP_GRACE_SECONDS = 5.0


class Work(Protocol):
    """A job's work as the platform that runs it knows it: the reconciler asks it before it
    calls a silent worker lost, since a worker that cannot report (its channel throttled, its
    network partitioned) has not stopped working."""

    def running(self, job_id: str) -> bool | None:
        """Whether the job's work (its worker's task or process) still runs: False once it
        ended or when it never started, None when that cannot be told now."""

    def stop(self, job_id: str) -> None:
        """Stop the job's work (cancel or drain); `settle` records the outcome once stopped."""


class Executor(Work, Protocol):
    # The engine's name, as a job records it ("local", "fargate").
    name: str

    def start(self, job: Job) -> None:
        """Start the job's worker, which records RUNNING and the outcome. Idempotent: a
        retried Run starts a job that is already starting again."""


@dataclass(frozen=True)
class Leases:
    """How long a worker may be silent. `seconds`: from its last heartbeat or state change.
    `start_seconds`: a job still STARTING whose worker never spoke, counted from STARTING (a
    Fargate task takes minutes to start, longer with a large image). `running_seconds`: a
    worker whose work still runs, as its platform says (a throttled or partitioned channel
    silences a worker that is working): it is lost only after this long."""

    seconds: float
    start_seconds: float
    running_seconds: float


class ExecutorError(Exception):
    """The executor could not start or stop a job (the cause is in the message)."""


class UnrunnableJob(ExecutorError):
    """The executor will not start this job as it is: the cause is the submitter's to fix
    (trying again cannot help)."""
