"""`make bench` (its warm pool part): Run → RUNNING on the AWS path, simulated offline
(tests.simulated_aws: the run-job state machine in moto's Step Functions, ECS tasks as local
worker processes), with a warm worker waiting and without a pool (every job starts its own task).

Each job is a trivial pipeline, prepared and run as the control function does; the time is from
Run until the job is RUNNING (its worker claimed it). Jobs run one at a time; with a pool, each
waits until a pooled worker is ready again. A cold start here is a process start and Beam's
import: on Fargate it is a task start and an image pull besides, a minute or more."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from beamjobs.domain.states import JobState
from tests.integration.conftest import pipeline_bytes
from tests.simulated_aws import simulated_aws

_ENDED = {JobState.DONE, JobState.FAILED, JobState.CANCELLED}
_POOL = 2


def _until(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the pool did not get ready")
        time.sleep(0.05)


def run_to_running(logs: Path, *, pool: int, jobs: int) -> list[float]:
    """Run → RUNNING of `jobs` jobs, in seconds, with `pool` pooled workers (0: none)."""
    times = []
    with simulated_aws(logs, pool=pool) as sim:
        for _ in range(jobs):
            _until(lambda: sim.fargate.ready() == pool)
            job_id = sim.prepare(pipeline_bytes())
            times.append(sim.run_to_running(job_id))
            if sim.wait_for(job_id, _ENDED, 120) is not JobState.DONE:
                raise RuntimeError(f"job {job_id} did not end DONE")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10, help="jobs per path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs:
        warm = run_to_running(Path(logs), pool=_POOL, jobs=args.jobs)
        cold = run_to_running(Path(logs), pool=0, jobs=args.jobs)
    print(f"simulated AWS path, Run → RUNNING over {args.jobs} jobs each:")
    for label, times in ((f"warm (a pool of {_POOL})", warm), ("cold (no pool)", cold)):
        print(
            f"  {label:<20} p50 {statistics.median(times):.3f} s   "
            f"max {max(times):.3f} s   min {min(times):.3f} s"
        )


if __name__ == "__main__":
    main()
