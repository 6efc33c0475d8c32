"""The worker under AWS's faults (the fault harness on the clients of its channel, served in
process, on an embedded AWS of its own): a pipeline that succeeded is never reported FAILED for a
bookkeeping failure."""

import logging

import apache_beam as beam
import pytest

from beamjobs import runtime
from beamjobs.aws import clients
from beamjobs.domain.states import JobState
from beamjobs.local.embedded import start_embedded, use_offline_credentials
from beamjobs.worker.artifacts import ArtifactCache
from beamjobs.worker.image_environments import ImageEnvironments
from beamjobs.worker.run import execute
from tests.e2e import user_code
from tests.e2e.conftest import ROOT, channel_of, local_channel, secret_of, started_job
from tests.faults.harness import Faults


@pytest.fixture(scope="module")
def settings():
    # The embedded AWS runs in this process here (not in a worker's): its request log must not
    # become the job's messages.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    use_offline_credentials()
    embedded, settings = start_embedded(ROOT / "template.yaml")
    yield settings
    embedded.stop()


@pytest.fixture(scope="module")
def channel(settings):
    """The workers' channel, served here (its writes are this process's, under the faults)."""
    served = local_channel(settings)
    yield served
    served.stop()


@pytest.fixture
def faults(settings):
    attached = [
        clients.client("dynamodb", settings),
        clients.client("dynamodb", settings, budget="patient"),
        clients.client("s3", settings),
    ]
    harness = Faults().attach(*attached)
    yield harness
    harness.detach(*attached)


def _squares():
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([1, 2, 3]) | beam.Map(user_code.square)
    return pipeline


def _execute(channel, stores, job, tmp_path):
    return execute(
        channel_of(channel.url, job, secret_of(stores, job)),
        heartbeat_seconds=5,
        cache=ArtifactCache(tmp_path / "artifacts"),
        images=ImageEnvironments(tmp_path / "environments"),
    )


def _texts(stores, job_id):
    return [m.text for e in stores.jobs.events(job_id) for m in e.messages]


def test_throttled_final_metrics_leave_a_succeeded_pipeline_done(
    settings, channel, faults, tmp_path
):
    # Given S3 throttling every write of the job's metrics
    stores = runtime.stores(settings)
    job = started_job(stores, "metrics-throttled", _squares())
    faults.add("PutObject", "throttle", times=10**9, when=lambda r: "/metrics/" in r["_url"])
    # When its pipeline succeeds
    state = _execute(channel, stores, job, tmp_path)
    # Then it is DONE, and says what could not be recorded
    assert ("PutObject", "throttle") in faults.fired
    assert state is JobState.DONE
    assert stores.jobs.get("metrics-throttled").state is JobState.DONE
    texts = _texts(stores, "metrics-throttled")
    assert any("final metrics could not be recorded" in t for t in texts), texts


def test_a_throttled_done_write_is_still_recorded_done(settings, channel, faults, tmp_path):
    # Given DynamoDB throttling the put of the job's DONE event 6 times (all the attempts an
    # ordinary client makes: it would give up)
    stores = runtime.stores(settings)
    job = started_job(stores, "done-throttled", _squares())
    faults.add(
        "PutItem",
        "throttle",
        times=6,
        when=lambda r: r.get("Item", {}).get("state") == {"S": "DONE"},
    )
    # When its pipeline succeeds
    state = _execute(channel, stores, job, tmp_path)
    # Then the outcome is recorded DONE, not lost
    assert faults.fired.count(("PutItem", "throttle")) == 6
    assert state is JobState.DONE
    assert stores.jobs.get("done-throttled").state is JobState.DONE
