"""Run one STARTING job as a worker does, SIGKILLed just before its n-th write to AWS:
`python kill_at_write.py JOB_ID N` (settings from the environment, as a worker's)."""

import sys

from beamjobs import aws
from beamjobs.settings import Settings
from beamjobs.worker.run import JobRunner
from tests.faults.harness import Faults

if __name__ == "__main__":
    job_id, n = sys.argv[1], int(sys.argv[2])
    settings = Settings.from_env()
    runner = JobRunner()
    faults = Faults()
    faults.attach(
        aws.client("dynamodb", settings),
        aws.client("dynamodb", settings, patient=True),
        aws.client("s3", settings),
    )
    faults.kill_at_write(n)
    sys.exit(runner.run(job_id))
