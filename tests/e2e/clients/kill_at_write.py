"""Run one STARTING job as a worker does, SIGKILLed just before its n-th call of its channel:
`python kill_at_write.py JOB_ID N` (settings from the environment, as a worker's)."""

import sys

from beamjobs.aws import clients
from beamjobs.settings import Settings
from beamjobs.worker.run import JobRunner
from tests.faults.harness import Faults

if __name__ == "__main__":
    job_id, n = sys.argv[1], int(sys.argv[2])
    settings = Settings.from_env(worker=True)
    runner = JobRunner()
    faults = Faults()
    faults.attach(clients.client("lambda", settings, budget="patient"))
    faults.kill_at_write(n)
    sys.exit(runner.run(job_id))
