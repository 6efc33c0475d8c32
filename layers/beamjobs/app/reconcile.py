"""Ending jobs whose workers could not record how they ended: workers gone silent (the reconcile
function on a schedule on AWS, and the local executor's periodic check), and Step Functions
executions that failed, timed out or were stopped."""

from __future__ import annotations

from datetime import UTC, datetime

from beamjobs.aws import malformed_items
from beamjobs.domain.errors import MalformedItem
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.states import JobState
from beamjobs.domain.store import JobStore


def fail_lost_jobs(
    store: JobStore, *, lease_seconds: float, start_lease_seconds: float
) -> dict[str, JobState]:
    """Settle every active job whose worker has not been heard from for longer than its lease.
    A job still STARTING whose worker never spoke gets the start lease, counted from STARTING:
    a Fargate task takes minutes to start (longer with a large SDK sidecar image), and is not
    lost meanwhile. Any other job counts the lease from its last heartbeat or state change.
    Returns each settled job's final state: FAILED with "worker lost", or CANCELLED / DRAINED
    if it was being stopped."""
    now = store.now()
    settled: dict[str, JobState] = {}
    active = store.active_jobs()
    beats = store.heartbeats([job.job_id for job in active])
    for job in active:
        beat = beats.get(job.job_id)
        starting = job.state is JobState.STARTING and beat is None
        lease = start_lease_seconds if starting else lease_seconds
        last_seen = max(beat or 0.0, job.state_time)
        if now - last_seen <= lease:
            continue
        since = datetime.fromtimestamp(last_seen, UTC).isoformat(timespec="seconds")
        if starting:
            cause = f"worker lost: it never started after STARTING at {since} (lease {lease:g} s)"
        else:
            cause = f"worker lost: no heartbeat since {since} (lease {lease:g} s)"
        try:
            settled[job.job_id] = Jobs(store).settle(job.job_id, cause).state
        except MalformedItem as error:  # the others are still settled
            malformed_items.skipped("the reconciler", job.job_id, error)
    return settled


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
