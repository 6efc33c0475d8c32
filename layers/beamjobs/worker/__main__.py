"""`python -m beamjobs.worker JOB_ID`: run one job with the settings from the environment (the
entry point of a worker container; locally, jobs are forked from `beamjobs.worker.forkserver`).
`python -m beamjobs.worker --warm`: a pooled worker, which waits for a job offered to the warm
pool and runs it (beamjobs.worker.warm_pool)."""

from __future__ import annotations

import sys

from beamjobs.worker.run import run_job
from beamjobs.worker.warm_pool import serve_offers

if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m beamjobs.worker JOB_ID | --warm", file=sys.stderr)
        sys.exit(2)
    sys.exit(serve_offers() if sys.argv[1] == "--warm" else run_job(sys.argv[1]))
