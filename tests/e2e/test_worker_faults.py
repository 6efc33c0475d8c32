"""The worker under AWS's faults (the fault harness on the clients of its channel, served in
process, on an embedded AWS of its own): a pipeline that succeeded is never reported FAILED for a
bookkeeping failure."""

import dataclasses
import logging
import threading
import time

import apache_beam as beam
import pytest

from beamjobs import runtime
from beamjobs.app.reconcile import fail_lost_jobs
from beamjobs.aws import clients
from beamjobs.domain.errors import BeamjobsError
from beamjobs.domain.executor import Leases
from beamjobs.domain.states import JobState
from beamjobs.local.embedded import start_embedded, use_offline_credentials
from beamjobs.worker.artifacts import ArtifactCache
from beamjobs.worker.channel import WORKER_FUNCTION, JobChannel, channel_invokers
from beamjobs.worker.image_environments import ImageEnvironments
from beamjobs.worker.run import execute
from tests.e2e import user_code
from tests.e2e.conftest import ROOT, channel_of, local_channel, secret_of, started_job
from tests.faults.harness import Faults, on_partition


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


# The reconciler's leases here: a silent worker is lost after 5 s (30 s on AWS: here a minute's
# throttle is twelve leases), unless its work still runs.
LEASES = Leases(seconds=5.0, start_seconds=600.0, running_seconds=900.0)


class Worker:
    """A job's worker on a thread of this process, through its own channel clients (as a
    worker process makes them: a patient one for reports, a brief one for its heartbeat), with
    a reconciler beside it that knows whether the worker still runs (as the local executor
    knows its worker process, or Step Functions the worker's task)."""

    def __init__(self, settings, channel, job, tmp_path):
        self.settings = dataclasses.replace(
            settings,
            endpoint_url=channel.url,
            worker_function=WORKER_FUNCTION,
            heartbeat_seconds=1.0,
        )
        self.clients = [
            clients.client("lambda", self.settings, budget=budget)
            for budget in ("patient", "brief")
        ]
        reports, beats = channel_invokers(self.settings)
        stores = runtime.stores(settings)
        self.channel = JobChannel(reports, job.job_id, secret_of(stores, job), beats=beats)
        self.outcome: list[JobState] = []
        self._thread = threading.Thread(
            target=lambda: self.outcome.append(
                execute(
                    self.channel,
                    heartbeat_seconds=1.0,
                    cache=ArtifactCache(tmp_path / "artifacts"),
                    images=ImageEnvironments(tmp_path / "environments"),
                )
            ),
            daemon=True,
        )
        self._reconciled = threading.Event()
        self._store = stores.jobs

    def running(self, job_id):
        return self._thread.is_alive()

    def stop(self, job_id):
        raise AssertionError(f"the reconciler stopped the work of {job_id}")

    def __enter__(self):
        self._thread.start()
        threading.Thread(target=self._reconcile, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._reconciled.set()
        self._thread.join(timeout=700)

    def _reconcile(self):
        while not self._reconciled.wait(2.0):
            try:
                fail_lost_jobs(self._store, self, LEASES)
            except BeamjobsError:  # e.g. the heartbeats' read throttled: the next round
                continue

    def wait(self, timeout):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the worker did not end"
        return self.outcome[0]


def _held(tmp_path):
    """A pipeline held until the test lets it go (by creating the file it waits for)."""
    release = tmp_path / "release"
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([1]) | beam.Map(user_code.wait_for_file, str(release))
    return pipeline, release


def _wait_until(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _lost(texts):
    return [t for t in texts if t.startswith("worker lost")]


def test_a_worker_channel_throttled_for_a_minute_loses_no_job(settings, channel, tmp_path):
    # Given a running job whose worker beats every second, a reconciler that calls a worker
    # lost after 5 s of silence unless its work runs
    stores = runtime.stores(settings)
    pipeline, release = _held(tmp_path)
    job = started_job(stores, "channel-throttled", pipeline)
    with Worker(settings, channel, job, tmp_path) as worker:
        _wait_until(lambda: stores.jobs.heartbeats([job.job_id]))
        # When every invocation of the worker channel is throttled for 60 s (the function at
        # its reserved concurrency), and the pipeline ends 10 s before the throttle does
        faults = Faults().attach(*worker.clients)
        faults.window("Invoke", "throttle", seconds=60)
        time.sleep(50)
        silent_for = stores.jobs.now() - stores.jobs.heartbeats([job.job_id])[job.job_id]
        release.touch()
        state = worker.wait(timeout=700)
        faults.detach(*worker.clients)
    # Then the worker was silent for longer than its lease, and the job is DONE, never lost
    # (whether a beat or the outcome lands first once the throttle lifts is a race either may win)
    assert faults.fired.count(("Invoke", "throttle")) > 20
    assert silent_for > 8 * LEASES.seconds
    assert state is JobState.DONE
    assert stores.jobs.get(job.job_id).state is JobState.DONE
    texts = _texts(stores, job.job_id)
    assert _lost(texts) == [], texts


def test_a_jobs_partition_throttled_for_90_s_records_its_outcome_once(
    settings, channel, faults, tmp_path
):
    # Given a running job
    stores = runtime.stores(settings)
    pipeline, release = _held(tmp_path)
    job = started_job(stores, "hot-partition", pipeline)
    with Worker(settings, channel, job, tmp_path) as worker:
        _wait_until(lambda: stores.jobs.heartbeats([job.job_id]))
        # When DynamoDB throttles every request to the job's partition for 90 s (its
        # heartbeat, its messages, its outcome, the reconciler's reads of it), and the
        # pipeline succeeds 10 s into the throttle
        faults.window("*", "throttle", seconds=90, when=on_partition(f"job#{job.job_id}"))
        throttled_until = time.monotonic() + 90
        time.sleep(10)
        release.touch()
        state = worker.wait(timeout=700)
    # Then its outcome was recorded after the throttle, once: DONE, never lost
    assert time.monotonic() > throttled_until
    assert faults.fired.count(("Query", "throttle")) > 0  # every channel call reads the job
    assert state is JobState.DONE
    events = stores.jobs.events(job.job_id)
    assert [e.state for e in events if e.state is JobState.DONE] == [JobState.DONE]
    assert _lost(_texts(stores, job.job_id)) == []
