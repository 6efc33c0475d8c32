"""`python -m beamjobs.worker JOB_ID`: run one job with the settings from the environment (the
entry point of a worker container; locally, jobs are forked from `beamjobs.worker.forkserver`)."""

from __future__ import annotations

import sys

from beamjobs.worker.run import run_job

if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m beamjobs.worker JOB_ID", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_job(sys.argv[1]))
