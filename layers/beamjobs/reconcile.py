"""Find jobs whose workers went silent and end them: the rule behind the reconcile function
(run on a schedule on AWS) and the local executor's periodic check."""

from __future__ import annotations

from datetime import UTC, datetime

from beamjobs.executor import settle
from beamjobs.states import JobState
from beamjobs.store import JobStore


def fail_lost_jobs(store: JobStore, *, lease_seconds: float) -> dict[str, JobState]:
    """Settle every active job whose worker has not been heard from for longer than the lease
    (a job never heard from counts from its last state change). Returns each settled job's
    final state: FAILED with "worker lost", or CANCELLED / DRAINED if it was being stopped."""
    now = store.now()
    settled: dict[str, JobState] = {}
    for job in store.active_jobs():
        last_seen = max(job.heartbeat_at or 0.0, job.state_time)
        if now - last_seen <= lease_seconds:
            continue
        since = datetime.fromtimestamp(last_seen, UTC).isoformat(timespec="seconds")
        cause = f"worker lost: no heartbeat since {since} (lease {lease_seconds:g} s)"
        settled[job.job_id] = settle(store, job.job_id, cause)
    return settled
