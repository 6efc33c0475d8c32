"""`python -m beamjobs.worker [JOB_ID]`: run one job with the settings from the environment.

Without JOB_ID the worker starts warm: it imports Beam and connects to AWS first, then reads the
job id from standard input. Either way a worker process runs exactly one job and exits, so
nothing of one job (imports, environment, temporary files, threads) can reach another.
"""

from __future__ import annotations

import logging
import sys

from beamjobs import runtime
from beamjobs.settings import Settings
from beamjobs.worker.run import execute


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        print("usage: python -m beamjobs.worker [JOB_ID]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    stores = runtime.stores(settings)
    if len(argv) == 2:
        job_id = argv[1]
    else:
        job_id = sys.stdin.readline().strip()
        if not job_id:
            return 0  # the pool closed without handing over a job
    execute(job_id, stores, heartbeat_seconds=settings.heartbeat_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
