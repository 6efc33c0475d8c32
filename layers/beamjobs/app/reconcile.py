"""Ending jobs whose workers could not record how they ended: workers lost (the reconcile
function on a schedule on AWS, and the local executor's periodic check), and Step Functions
executions that failed, timed out or were stopped."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from beamjobs.aws import malformed_items
from beamjobs.domain.errors import BeamjobsError, MalformedItem
from beamjobs.domain.executor import ExecutorError, Leases, Work
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import ACTIVE_STATES, Change, Job, Message
from beamjobs.domain.states import JobState
from beamjobs.domain.store import JobStore

logger = logging.getLogger(__name__)


def fail_lost_jobs(store: JobStore, work: Work, leases: Leases) -> dict[str, JobState]:
    """Settle every active job whose worker is lost: silent past its lease, and its work ended
    (or silent past `running_seconds` though its work runs: then it is stopped too). Each job
    is decided on a strong read of it and its heartbeat, and settled only as it was read (a
    job that moved on meanwhile is left to the next round). A job whose listing it read behind
    its log has its listing repaired. Returns each settled job's final
    state: FAILED with "worker lost", or CANCELLED / DRAINED if it was being stopped."""
    settled: dict[str, JobState] = {}
    # The active index lags the log: it only names the jobs to read again, strongly.
    listed = store.active_jobs()
    beats = store.heartbeats([job.job_id for job in listed])
    for candidate in listed:
        if not _silent(candidate, beats.get(candidate.job_id), store.now(), leases.seconds):
            continue  # heard from within the shortest lease: no need to read it again
        try:
            job = store.get(candidate.job_id)
            store.repair(job)  # e.g. listed active after it ended: its last projection lost
            beat = store.heartbeats([job.job_id]).get(job.job_id)
            decided = _decide(job, beat, store.now(), work, leases)
            if decided is None:
                continue
            cause, stop = decided
            ended = Jobs(store).settle_as_read(job, cause)
        except MalformedItem as error:  # the others are still settled
            malformed_items.skipped("the reconciler", candidate.job_id, error)
            continue
        except BeamjobsError:  # e.g. its partition throttled: the others are still settled
            logger.warning("could not reconcile job %s now", candidate.job_id, exc_info=True)
            continue
        if ended is None:
            continue
        settled[job.job_id] = ended.state
        if stop:
            _stop(work, job.job_id)
    return settled


def _silent(job: Job, beat: float | None, now: float, lease: float) -> bool:
    return now - max(beat or 0.0, job.state_time) > lease


def _decide(
    job: Job, beat: float | None, now: float, work: Work, leases: Leases
) -> tuple[str, bool] | None:
    """Why the job's worker is lost, and whether its work is to be stopped; None when it is
    not lost (or cannot be told now)."""
    starting = job.state is JobState.STARTING and beat is None
    lease = leases.start_seconds if starting else leases.seconds
    if job.state not in ACTIVE_STATES or not _silent(job, beat, now, lease):
        return None
    last_seen = max(beat or 0.0, job.state_time)
    since = datetime.fromtimestamp(last_seen, UTC).isoformat(timespec="seconds")
    running = work.running(job.job_id)
    if running is None:
        logger.warning(
            "job %s is silent and its work's status is unknown: deciding later", job.job_id
        )
        return None
    if starting:
        return (
            f"worker lost: it never started after STARTING at {since} (lease {lease:g} s)",
            running,
        )
    if not running:
        return (
            f"worker lost: no heartbeat since {since} (lease {lease:g} s), and its work ended",
            False,
        )
    if now - last_seen <= leases.running_seconds:
        logger.warning("job %s: no heartbeat since %s, but its work runs", job.job_id, since)
        return None
    return (
        f"worker lost: no heartbeat since {since} though its work ran "
        f"(lease {leases.running_seconds:g} s): its work was stopped",
        True,
    )


def _stop(work: Work, job_id: str) -> None:
    try:
        work.stop(job_id)
    except (BeamjobsError, ExecutorError):  # the job is settled; its work ends at its time limit
        logger.exception("could not stop the work of job %s", job_id)


# Step Functions execution statuses, and what they mean for a job whose worker left no outcome.
_EXECUTION_ENDINGS = {
    "SUCCEEDED": "the worker's task ended without recording an outcome",
    "FAILED": "the worker's task failed",
    "TIMED_OUT": "the job timed out",
    "ABORTED": "the job's execution was stopped",
}


def settle_execution(store: JobStore, job_id: str, status: str, detail: str = "") -> JobState:
    """Settle a job whose execution ended with `status`: a terminal state the worker recorded
    stands; a job being cancelled (or drained) ends CANCELLED (DRAINED); any other ends FAILED
    with a cause naming the status and `detail` (the execution's error and cause)."""
    cause = _EXECUTION_ENDINGS.get(status, f"the job's execution ended {status}")
    return Jobs(store).settle(job_id, f"{cause}: {detail}" if detail else cause).state


# A worker's task that never started, as the state machine's Catch reports it: ECS stopped it
# before its containers ran (StopCode TaskFailedToStart; an image that could not be pulled, a
# secret or log group it could not reach), or RunTask kept answering that Fargate has no
# capacity. None of that is the job's fault, and it passes: the task is started again.
_NEVER_STARTED_REASONS = ("CannotPullContainerError", "ResourceInitializationError")
_CAPACITY_ERRORS = frozenset(
    {"ECS.AmazonECSException", "ECS.LimitExceededException", "ECS.ServerException"}
)
# Waits between starts: as long as the job has been starting (so doubling), within these.
START_RETRY_MIN_SECONDS = 10.0
START_RETRY_MAX_SECONDS = 120.0


def never_started(error: str, cause: str) -> str | None:
    """Why the worker's task never started, from the Catch's error and cause; None when it did
    start (and so failed as the job's own failure)."""
    if error in _CAPACITY_ERRORS:
        return f"{error}: {cause}" if cause else error
    if error != "States.TaskFailed":
        return None
    try:
        task = json.loads(cause)
    except ValueError:
        return None
    if not isinstance(task, dict):
        return None
    reason = str(task.get("StoppedReason") or "")
    if task.get("StopCode") == "TaskFailedToStart" or reason.startswith(_NEVER_STARTED_REASONS):
        return reason or "the task failed to start"
    return None


def start_again(store: JobStore, job_id: str, reason: str, leases: Leases) -> float | None:
    """The seconds to wait before starting the job's task again, after it never started for
    `reason`; None when it is not to be started again: the job is no longer STARTING (cancelled
    meanwhile), or the wait would take it past its start lease. The job says so (a warning),
    in the same append that decides it, so a racing Cancel wins or loses whole."""
    wait = 0.0

    def rule(job: Job, now: float) -> Change | None:
        nonlocal wait
        starting_for = now - job.state_time
        wait = min(max(starting_for, START_RETRY_MIN_SECONDS), START_RETRY_MAX_SECONDS)
        if job.state is not JobState.STARTING or starting_for + wait > leases.start_seconds:
            return None
        text = f"the worker's task did not start ({reason}): starting it again in {wait:.0f} s"
        return Change(messages=(Message("JOB_MESSAGE_WARNING", text, now),))

    decided = Jobs(store).apply(job_id, rule)
    return wait if decided.changed else None
