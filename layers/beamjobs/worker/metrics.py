"""The job's metrics: attempted values published while it runs (after every bundle, and from
the progress reports of a bundle still running, at most one snapshot every
METRICS_SNAPSHOT_SECONDS), attempted and committed at the end, through the worker channel: one
S3 blob per job, a serialized MetricResults, so large metric sets never meet DynamoDB's item
limit."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from apache_beam.metrics.monitoring_infos import consolidate
from apache_beam.portability.api import beam_fn_api_pb2, beam_job_api_pb2, beam_runner_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers

from beamjobs.domain.errors import BeamjobsError
from beamjobs.domain.limits import METRICS_SNAPSHOT_SECONDS, PROGRESS_SECONDS
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
        self._stop()
        self._write([] if committed_only else final, final)

    def abandon(self) -> None:
        """Stop publishing snapshots, and write the latest one not yet written: a failed job
        keeps the values it reached (best effort: it is failing already)."""
        snapshot = self._stop()
        if snapshot is not None:
            try:
                self._write(snapshot, [])
            except BeamjobsError:
                logger.warning("could not publish metrics of job %s", self._job_id, exc_info=True)

    def _stop(self) -> list[Any] | None:
        """Stop the publishing thread; the snapshot offered since the last one written, if any."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()
        with self._changed:
            snapshot, self._latest = self._latest, None
        return snapshot

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


def _progress_request(instruction_id: str) -> Any:
    return beam_fn_api_pb2.InstructionRequest(
        process_bundle_progress=beam_fn_api_pb2.ProcessBundleProgressRequest(
            instruction_id=instruction_id
        )
    )


class _ReportingProgressRequester(fn_runner.ProgressRequester):  # type: ignore[misc]
    """Beam's progress requester, which FnApiRunner's bundle managers make for every bundle
    but give no callback (Beam keeps the reports to itself): this one hands each report to
    the running PublishingRunner. It asks first a full interval into the bundle, so short
    bundles cost no request, and stops at once when the bundle ends. (An EMBEDDED harness
    runs its whole bundle inside the call that starts it, before any requester starts:
    _EmbeddedProgress asks those.)"""

    def __init__(
        self, worker_handler: Any, instruction_id: str, frequency: Any, callback: Any = None
    ) -> None:
        super().__init__(worker_handler, instruction_id, frequency, callback)
        self._stopped = threading.Event()
        # A report and the bundle's end, one at a time: a report in flight when the bundle
        # ends must not outlive it (it would count the bundle twice beside its final counts).
        self._reporting = threading.Lock()

    def run(self) -> None:
        while not self._stopped.wait(self._frequency):
            try:
                request = _progress_request(self._instruction_id)
                response = self._worker_handler.control_conn.push(request).get()
            except Exception:  # a report lost is no reason to disturb the bundle
                logger.debug("no progress for bundle %s", self._instruction_id, exc_info=True)
                continue
            if response.error:  # the bundle ended meanwhile
                continue
            report = PublishingRunner.progress_sink
            with self._reporting:
                if report is not None and not self._stopped.is_set():
                    infos = response.process_bundle_progress.monitoring_infos
                    report(self._instruction_id, infos)

    def stop(self) -> None:
        with self._reporting:
            self._stopped.set()
            report = PublishingRunner.progress_sink
            if report is not None:
                report(self._instruction_id, None)


# The bundle managers look the requester up by this name when each bundle starts.
fn_runner.ProgressRequester = _ReportingProgressRequester  # type: ignore[misc]


class _EmbeddedProgress(threading.Thread):
    """While a bundle runs in EMBEDDED harnesses (the worker's own threads), asks each bundle
    they are running for its progress every PROGRESS_SECONDS, as the SDK harness's control
    service would (its SdkWorker answers progress beside a running bundle)."""

    def __init__(self, handlers: Sequence[Any], report: Callable[[str, Any], None]) -> None:
        super().__init__(name="embedded-progress", daemon=True)
        self._workers = [handler.worker for handler in handlers]
        self._report = report
        self._stopped = threading.Event()
        self._reported: set[str] = set()

    def __enter__(self) -> _EmbeddedProgress:
        if self._workers:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        if self._workers:
            self.join()
        for instruction_id in self._reported:
            self._report(instruction_id, None)

    def run(self) -> None:
        while not self._stopped.wait(PROGRESS_SECONDS):
            for worker in self._workers:
                for instruction_id in list(worker.bundle_processor_cache.active_bundle_processors):
                    try:
                        response = worker.do_instruction(_progress_request(instruction_id))
                    except Exception:  # as for a requester's: a report lost, nothing more
                        logger.debug("no progress for bundle %s", instruction_id, exc_info=True)
                        continue
                    if not response.error and not self._stopped.is_set():
                        self._reported.add(instruction_id)
                        self._report(
                            instruction_id, response.process_bundle_progress.monitoring_infos
                        )


class PublishingRunner(fn_runner.FnApiRunner):  # type: ignore[misc]
    """FnApiRunner that offers the metrics attempted so far after every bundle it executes, and
    while a bundle runs, from its progress reports (every PROGRESS_SECONDS): counters rise
    during a long bundle, and a job cancelled or failed in one keeps what it had counted."""

    # Where this process's progress reports go: the runner running (a worker runs one job).
    progress_sink: Callable[[str, Sequence[Any] | None], None] | None = None

    def __init__(self, publisher: MetricsPublisher, **kwargs: Any) -> None:
        super().__init__(progress_request_frequency=PROGRESS_SECONDS, **kwargs)
        self._publisher = publisher
        self._by_stage: dict[str, list[Any]] = {}
        # The latest report of each bundle running, by instruction id: what it has counted.
        self._running: dict[str, Sequence[Any]] = {}
        self._lock = threading.Lock()
        PublishingRunner.progress_sink = self._progressed

    def _progressed(self, instruction_id: str, infos: Sequence[Any] | None) -> None:
        """A running bundle's report, or None when it has ended (its final counts come with
        its response, in _execute_bundle)."""
        with self._lock:
            if infos is None:
                self._running.pop(instruction_id, None)
                return
            self._running[instruction_id] = list(infos)
        self._offer()

    def _execute_bundle(self, runner_execution_context, bundle_context_manager, bundle_input):  # type: ignore[no-untyped-def]
        embedded = [
            handler
            for handler in bundle_context_manager.worker_handlers
            if isinstance(handler, worker_handlers.EmbeddedWorkerHandler)
        ]
        with _EmbeddedProgress(embedded, self._progressed):
            response = super()._execute_bundle(
                runner_execution_context, bundle_context_manager, bundle_input
            )
        stage = bundle_context_manager.stage.name
        with self._lock:
            # consolidate is a generator: kept as a list, to be read at every offer.
            self._by_stage[stage] = list(
                consolidate(
                    itertools.chain(
                        response.process_bundle.monitoring_infos, self._by_stage.get(stage, [])
                    )
                )
            )
        self._offer()
        return response

    def _offer(self) -> None:
        with self._lock:
            finished = itertools.chain.from_iterable(self._by_stage.values())
            running = itertools.chain.from_iterable(self._running.values())
            snapshot = list(consolidate(itertools.chain(finished, running)))
        self._publisher.offer(snapshot)
