"""The job's metrics: attempted values published while it runs (after every bundle, so at least
at every stage boundary, and at most one snapshot every METRICS_SNAPSHOT_SECONDS), attempted
and committed at the end, through the worker channel: one S3 blob per job, a serialized
MetricResults, so large metric sets never meet DynamoDB's item limit."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from apache_beam.metrics.monitoring_infos import consolidate
from apache_beam.portability.api import beam_job_api_pb2, beam_runner_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner

from beamjobs.domain.errors import BeamjobsError
from beamjobs.domain.limits import METRICS_SNAPSHOT_SECONDS
from beamjobs.worker.channel import JobChannel

logger = logging.getLogger(__name__)


# The DoFns of a pipeline built by Beam's Java SDK, whose PortableMetrics reads a MetricResults'
# attempted and committed lists as one list (each counter would be there twice).
_JAVA_DOFN = "beam:dofn:javasdk:0.1"
_PARDO = "beam:transform:pardo:v1"


def built_by_java(pipeline: beam_runner_api_pb2.Pipeline) -> bool:
    return any(
        transform.spec.urn == _PARDO
        and beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).do_fn.urn
        == _JAVA_DOFN
        for transform in pipeline.components.transforms.values()
    )


class MetricsPublisher:
    """Writes the latest snapshot from a background thread, so the pipeline never waits on S3;
    snapshots that arrive while one is being written are coalesced into the newest."""

    def __init__(self, channel: JobChannel) -> None:
        self._channel = channel
        self._job_id = channel.job_id
        self._latest: list[Any] | None = None
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._publish_latest, name="metrics", daemon=True)
        self._thread.start()

    def offer(self, attempted: Sequence[Any]) -> None:
        with self._changed:
            self._latest = list(attempted)
            self._changed.notify()

    def finish(self, final: Sequence[Any], *, committed_only: bool = False) -> None:
        """Stop publishing snapshots and write the final metrics: attempted and committed, or,
        for a client that reads both lists as one (Java's), committed only, as Beam's
        reference server answers."""
        self.abandon()
        self._write([] if committed_only else final, final)

    def abandon(self) -> None:
        """Stop publishing snapshots; the last one written stays as the attempted values."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()

    def _publish_latest(self) -> None:
        # The first snapshot comes a pacing interval into the run: a job that ends sooner
        # publishes its final metrics alone.
        with self._changed:
            self._changed.wait_for(lambda: self._closed, timeout=METRICS_SNAPSHOT_SECONDS)
        while True:
            with self._changed:
                while self._latest is None and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                snapshot, self._latest = self._latest, None
            try:
                self._write(snapshot or [], [])
            except BeamjobsError:
                logger.warning("could not publish metrics of job %s", self._job_id, exc_info=True)
            # Paced within the worker channel's rate (REPORTS_PER_MINUTE): what arrives
            # meanwhile is coalesced into the next snapshot.
            with self._changed:
                self._changed.wait_for(lambda: self._closed, timeout=METRICS_SNAPSHOT_SECONDS)

    def _write(self, attempted: Sequence[Any], committed: Sequence[Any]) -> None:
        results = beam_job_api_pb2.MetricResults(attempted=attempted, committed=committed)
        self._channel.publish_metrics(results.SerializeToString())


class PublishingRunner(fn_runner.FnApiRunner):  # type: ignore[misc]
    """FnApiRunner that offers the metrics attempted so far after every bundle it executes."""

    def __init__(self, publisher: MetricsPublisher, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._publisher = publisher
        self._by_stage: dict[str, Iterable[Any]] = {}

    def _execute_bundle(self, runner_execution_context, bundle_context_manager, bundle_input):  # type: ignore[no-untyped-def]
        response = super()._execute_bundle(
            runner_execution_context, bundle_context_manager, bundle_input
        )
        stage = bundle_context_manager.stage.name
        self._by_stage[stage] = consolidate(
            itertools.chain(response.process_bundle.monitoring_infos, self._by_stage.get(stage, []))
        )
        self._publisher.offer(list(itertools.chain.from_iterable(self._by_stage.values())))
        return response
