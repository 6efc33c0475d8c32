"""A worker killed (SIGKILL) at every write point of its work (each call of its channel), one
run per point: once its
lease has passed, the job has exactly one terminal state, the same in every view; a pipeline
whose DONE was written is never reported FAILED; no message is stored twice."""

import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pytest

from beamjobs import runtime
from beamjobs.app.reconcile import fail_lost_jobs
from beamjobs.aws import clients
from beamjobs.aws.dynamodb_store import DynamoJobStore
from beamjobs.domain.executor import Leases
from beamjobs.domain.states import TERMINAL_STATES, JobState
from beamjobs.local.embedded import start_embedded, use_offline_credentials
from beamjobs.local.executor import worker_environment
from tests.e2e import user_code
from tests.e2e.conftest import ROOT, WORKER_PYTHON, local_channel, secret_of, started_job
from tests.jobstates import Work

DRIVER = Path(__file__).parent / "clients" / "kill_at_write.py"
# More write points than a trivial job has: the last runs end DONE untouched.
MOST_WRITES = 40


@pytest.fixture(scope="module")
def settings():
    use_offline_credentials()
    embedded, settings = start_embedded(ROOT / "template.yaml")
    yield settings
    embedded.stop()


@pytest.fixture(scope="module")
def channel(settings):
    served = local_channel(settings)
    yield served
    served.stop()


def test_a_worker_killed_at_every_write_point_leaves_one_true_outcome(settings, channel, tmp_path):
    stores = runtime.stores(settings)
    later = DynamoJobStore(
        clients.client("dynamodb", settings),
        settings.table_name,
        item_lifetime=86_400,
        clock=lambda: stores.jobs.now() + 900,
    )
    outcomes = {}
    for n in range(1, MOST_WRITES + 1):
        job_id = f"killed-at-{n}"
        pipeline = beam.Pipeline()
        _ = pipeline | beam.Create([1, 2, 3]) | beam.Map(user_code.square)
        job = started_job(stores, job_id, pipeline)
        # When its worker is killed just before its n-th write
        done = subprocess.run(
            [WORKER_PYTHON, str(DRIVER), job_id, str(n)],
            cwd=ROOT,
            env={
                **worker_environment(settings, channel.url),
                "BEAMJOBS_WORKER_SECRET": secret_of(stores, job),
                "PYTHONPATH": str(ROOT),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        killed = done.returncode == -9
        assert killed or done.returncode == 0, done.stderr[-3000:]
        # And the reconciler finds it once its lease has passed
        fail_lost_jobs(later, Work(), Leases(30, 600, 900))
        # Then it has exactly one terminal state, and every view says it
        events = stores.jobs.events(job_id)
        terminal = [e.state for e in events if e.state in TERMINAL_STATES]
        assert len(terminal) == 1, (n, [e.state for e in events])
        assert stores.jobs.get(job_id).state is terminal[0]
        [listed] = [j for j in stores.jobs.list_jobs() if j.job_id == job_id]
        assert listed.state is terminal[0]
        assert job_id not in [j.job_id for j in stores.jobs.active_jobs()]
        # And a DONE it wrote stands (a kill after its work is not "worker lost")
        outcomes[n] = (killed, terminal[0])
        texts = [m.text for e in events for m in e.messages]
        assert len(texts) == len(set(texts)) or not killed, (n, texts)
        if not killed:
            break
    kills = [n for n, (killed, _) in outcomes.items() if killed]
    assert kills and not outcomes[max(outcomes)][0], "the last run must get through untouched"
    assert outcomes[max(outcomes)][1] is JobState.DONE
    print(f"{len(kills)} write points killed: {outcomes}", file=sys.stderr)
