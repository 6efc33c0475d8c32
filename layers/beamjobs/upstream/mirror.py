"""The mirror: the worker of a job that runs on an upstream engine (beamjobs.domain.engines). It
plays the SDK's side towards the upstream's Job API: prepares the job there, offers it the job's
staged artifacts, runs it; then follows the upstream job's states, messages and metrics into the
job's durable log, and forwards Cancel and Drain. It runs no pipeline itself (no apache_beam).

It reports through the worker channel, as a worker does, holding nothing but its job's worker
secret. It is restartable at any point: the upstream job's id is recorded on the job before the
upstream runs it, and the id of the last upstream message mirrored moves in the same event as
the message, so a mirror started again resumes following with nothing lost or repeated that the
upstream still keeps. An upstream that cannot be reached for longer than the lease fails the job
("engine lost"); a job that ends here (a timeout, the reconciler) is cancelled there.

`beamjobs mirror JOB_ID` (or `python -m beamjobs.upstream.mirror JOB_ID`): settings from the
environment (the worker's, with BEAMJOBS_UPSTREAM_ENGINE and BEAMJOBS_UPSTREAM_ENDPOINT). Exit code
0 once the job's outcome is recorded (or it must not run); anything else means "start me again".
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from beamjobs.api import pipeline_pb2
from beamjobs.domain.engines import PRISM, parse_engine
from beamjobs.domain.errors import BeamjobsError, Conflict
from beamjobs.domain.model import Message, is_after
from beamjobs.domain.options import ENGINE, JOB_TIMEOUT_SECONDS, option_key, read_option
from beamjobs.domain.states import JobState, is_terminal
from beamjobs.pipeline.artifacts import FILE, ArtifactLocation
from beamjobs.pipeline.dependencies import staged_sha256
from beamjobs.settings import Settings
from beamjobs.startup import end_with_parent, stop_own_group
from beamjobs.upstream.client import (
    Followed,
    Offered,
    UpstreamError,
    UpstreamJobService,
    UpstreamMessage,
)
from beamjobs.upstream.flink import FlinkRest
from beamjobs.upstream.prism import local_prism, runnable_on_prism
from beamjobs.worker.batching import gather
from beamjobs.worker.channel import Claimed, JobChannel, channel_invokers

logger = logging.getLogger(__name__)

# Streams that broke are opened again after this long (a reconnect, not a retry of a call).
_REOPEN_SECONDS = 1.0
# Upstream messages are mirrored in batches of at most this many, gathered for at most this long.
_BATCH = 100
_FLUSH_SECONDS = 0.2
# After the upstream job ended, its message stream has this long to deliver the rest.
_MESSAGES_AFTER_END_SECONDS = 10.0
_STOPPING = frozenset({JobState.CANCELLING, JobState.DRAINING})
# Beam's own option (PipelineOptions.job_name), which engines name their jobs by.
_JOB_NAME = "job_name"


class EngineLost(BeamjobsError):
    """The upstream could not be reached for longer than the lease, or forgot the job."""


def upstream_pipeline(pipeline: bytes, location: ArtifactLocation) -> bytes:
    """The pipeline as the upstream gets it: each dependency staged here is offered as a file
    named by its sha256 (keeping its role), for the upstream's staging service to ask for."""
    proto = pipeline_pb2.Pipeline.FromString(pipeline)
    for environment in proto.components.environments.values():
        for artifact in environment.dependencies:
            sha = staged_sha256(location, artifact)
            if sha is not None:
                artifact.type_urn = FILE
                artifact.type_payload = pipeline_pb2.ArtifactFilePayload(
                    path=sha, sha256=sha
                ).SerializeToString()
    return bytes(proto.SerializeToString())


def upstream_options(options: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The options as the upstream gets them: without the choice of engine, which is this
    deployment's and means nothing (or something else) there; and named by the job's id here,
    so that the engine's own tools (Flink's REST API and web UI) show which job it is."""
    kept = {key: value for key, value in options.items() if key != option_key(ENGINE.name)}
    return {**kept, option_key(_JOB_NAME): job_id}


class Mirror:
    """One job's mirror. `clock` is monotonic (for the lease and the timeout)."""

    def __init__(
        self,
        channel: JobChannel,
        upstream: UpstreamJobService,
        engine: str,
        *,
        heartbeat_seconds: float,
        lease_seconds: float,
        max_job_seconds: float,
        flink: FlinkRest | None = None,
        environments: Callable[[bytes], bytes] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`flink`: the REST API of the Flink cluster behind the upstream, when it is Beam's
        Flink job server (whose Cancel leaves the Flink job running). `environments`: the
        pipeline with its environments as the upstream can run them (the built-in Prism's)."""
        self._channel = channel
        self._upstream = upstream
        self._flink = flink
        self._environments = environments
        self._engine = engine
        self._heartbeat_seconds = heartbeat_seconds
        self._lease_seconds = lease_seconds
        self._max_job_seconds = max_job_seconds
        self._clock = clock
        self._last_contact = clock()
        self._last_problem = ""
        self._ended = threading.Event()  # the job ended here: stop following
        # Why the mirror fails the job itself (the upstream lost, the job's time limit).
        self._failure: str | None = None
        self._streams: list[Followed] = []
        self._lock = threading.Lock()
        self._pending: queue.SimpleQueue[tuple[str, Message] | None] = queue.SimpleQueue()
        self._last_error = ""  # the upstream's last ERROR message: a failed job's cause

    # -- the whole life ------------------------------------------------------------------------

    def run(self) -> None:
        """Mirror the job until it ends, and record how."""
        claimed = self._channel.claim(resume=True)
        if not isinstance(claimed, Claimed):
            logger.info("job %s is %s: nothing to mirror", self._channel.job_id, claimed.value)
            return
        timeout = min(read_option(claimed.options, JOB_TIMEOUT_SECONDS), self._max_job_seconds)
        try:
            upstream_id = self._start(claimed)
        except EngineLost as lost:
            self._channel.fail(str(lost))
            return
        except UpstreamError as error:  # refused: trying again would not change it
            self._channel.fail(f"the upstream engine {self._engine} refused the job: {error}")
            return
        except Conflict:
            logger.info("another mirror runs job %s upstream", self._channel.job_id)
            return
        cursor = claimed.job.upstream.cursor if claimed.job.upstream else ""
        messages = threading.Thread(target=self._follow_messages, args=(upstream_id, cursor))
        steering = threading.Thread(target=self._steer, args=(upstream_id, timeout))
        # Metrics apart from the heartbeat: a slow upstream GetJobMetrics (up to 30 s, the
        # upstream client's CALL_SECONDS) must not hold a beat back past the lease.
        copying = threading.Thread(target=self._copy_metrics, args=(upstream_id,))
        flusher = threading.Thread(target=self._flush, args=(cursor,))
        for thread in (messages, steering, copying, flusher):
            thread.start()
        upstream_ended = self._follow_states(upstream_id)
        ended_here = self._ended.is_set()
        self._ended.set()  # nothing is opened again, and steering and copying stop
        messages.join(_MESSAGES_AFTER_END_SECONDS)  # its stream ends with the job
        steering.join()
        copying.join()
        self._stop_streams()
        self._pending.put(None)
        flusher.join()
        if not ended_here:
            self._publish_metrics(upstream_id)  # the final ones
            self._channel.end_as_upstream(upstream_ended, self._cause(upstream_id, upstream_ended))
        elif self._failure is not None:  # else it was recorded (the reconciler, a cancel)
            self._channel.fail(self._failure)

    # -- starting, or resuming -----------------------------------------------------------------

    def _start(self, claimed: Claimed) -> str:
        """The upstream job's id: the one attached, if it ran; else a new one, prepared,
        attached, staged and run."""
        attached = claimed.job.upstream.job_id if claimed.job.upstream else None
        if attached is not None:
            state = self._reach(lambda: self._upstream.state(attached), forgotten=attached)
            if state is not JobState.STOPPED:
                logger.info("resuming to follow upstream job %s (%s)", attached, state)
                return attached
            logger.info("upstream preparation %s never ran: preparing again", attached)
        pipeline = upstream_pipeline(claimed.pipeline, claimed.artifacts.location)
        if self._environments is not None:
            pipeline = self._environments(pipeline)
        preparation = self._reach(
            lambda: self._upstream.prepare(
                pipeline, upstream_options(claimed.options, claimed.job.job_id), claimed.job.job_id
            )
        )
        self._channel.attach(preparation.preparation_id, replacing=attached)
        if preparation.staging_endpoint:
            offered = Offered(claimed.artifacts.read)
            self._reach(
                lambda: self._upstream.stage(
                    preparation.staging_endpoint, preparation.staging_token, offered
                )
            )
        upstream_id = self._reach(lambda: self._upstream.run(preparation.preparation_id))
        if upstream_id != preparation.preparation_id:
            self._channel.attach(upstream_id, replacing=preparation.preparation_id)
        return upstream_id

    def _reach(self, call: Callable[[], Any], *, forgotten: str | None = None) -> Any:
        """`call` to the upstream, tried again while the upstream is unreachable, until the
        lease runs out (EngineLost). NOT_FOUND for `forgotten` means the upstream lost the
        job (e.g. it restarted: Beam's job servers keep jobs in memory)."""
        while True:
            try:
                answer = call()
            except UpstreamError as error:
                if error.code == "NOT_FOUND" and forgotten is not None:
                    raise EngineLost(self._lost(f"it no longer knows job {forgotten}")) from error
                if error.code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                    raise
                self._check_lease(str(error))
                if self._ended.wait(_REOPEN_SECONDS):
                    raise
                continue
            self._contact()
            return answer

    def _contact(self) -> None:
        with self._lock:
            self._last_contact = self._clock()

    def _check_lease(self, problem: str) -> None:
        with self._lock:
            self._last_problem = problem
            silent = self._clock() - self._last_contact
        if silent > self._lease_seconds:
            raise EngineLost(
                self._lost(f"unreachable for {silent:.0f} s (lease {self._lease_seconds:g} s)")
            )

    def _lost(self, why: str) -> str:
        last = f"; last answer: {self._last_problem}" if self._last_problem else ""
        where = f"the upstream engine {self._engine} at {self._upstream.endpoint}"
        return f"engine lost: {where}: {why}{last}"

    # -- following ------------------------------------------------------------------------------

    def _follow_states(self, upstream_id: str) -> JobState:
        """Follow the upstream job's states until it ends (its final state), or the job ends
        here (then what the state is does not matter)."""
        while not self._ended.is_set():
            stream = self._open(self._upstream.states(upstream_id))
            try:
                for state in stream:
                    self._contact()
                    if isinstance(state, JobState) and is_terminal(state):
                        return state
            except BeamjobsError as error:
                if self._ended.is_set():
                    break
                try:
                    if error.code == "NOT_FOUND":
                        raise EngineLost(self._lost(f"it no longer knows job {upstream_id}"))
                    self._check_lease(str(error))
                except EngineLost as lost:
                    self._end_here(upstream_id, failure=str(lost))
                    break
            self._ended.wait(_REOPEN_SECONDS)
        return JobState.FAILED

    def _cause(self, upstream_id: str, state: JobState) -> str:
        """Why the job ended so: a failure's is the upstream's last error (as Beam's SDK makes
        it the pipeline's exception)."""
        where = f"on the upstream engine {self._engine} (job {upstream_id})"
        if state is JobState.FAILED and self._last_error:
            return self._last_error
        return f"the job ended {state.value} {where}"

    def _follow_messages(self, upstream_id: str, cursor: str) -> None:
        """Queue the upstream's messages not mirrored before, until its stream ends with the
        job (opened again whenever it breaks before)."""
        while not self._ended.is_set():
            stream = self._open(self._upstream.messages(upstream_id))
            # The stream is read to its end even past the job's: Prism sends a failure's cause
            # as the message after the FAILED state.
            ended = False
            try:
                for item in stream:
                    self._contact()
                    if isinstance(item, UpstreamMessage) and is_after(item.message_id, cursor):
                        self._queue(item, cursor)
                        cursor = item.message_id
                    elif isinstance(item, JobState) and is_terminal(item):
                        ended = True
            except BeamjobsError:
                if not ended:
                    logger.info("the message stream of %s broke: opening it again", upstream_id)
            if ended:
                return
            self._ended.wait(_REOPEN_SECONDS)

    def _queue(self, item: UpstreamMessage, cursor: str) -> None:
        if item.importance == "JOB_MESSAGE_ERROR":
            self._last_error = item.text
        if cursor.isdigit() and item.message_id.isdigit():
            # Numbered one by one (as Beam's reference server does): some went by unmirrored.
            missed = int(item.message_id) - int(cursor) - 1
            if missed > 0:
                self._warn(
                    f"{missed} messages of the upstream engine {self._engine} were not "
                    "mirrored: they were sent while no mirror followed, and the engine no "
                    "longer keeps them"
                )
        self._pending.put((item.message_id, Message(item.importance, item.text, time.time())))

    def _warn(self, text: str) -> None:
        """A message of the mirror's own, in line with the upstream's."""
        self._pending.put(("", Message("JOB_MESSAGE_WARNING", text, time.time())))

    def _flush(self, cursor: str) -> None:
        """Mirror queued messages in batches, each kept until it is stored (in order)."""
        batch: list[tuple[str, Message]] = []
        done = False
        while not (done and not batch):
            if not done:
                done = gather(self._pending, batch, limit=_BATCH, wait=_FLUSH_SECONDS)
            if not batch:
                continue
            try:
                cursor = self._channel.mirror(batch, cursor)
            except BeamjobsError:
                logger.warning("mirroring messages failed: trying again", exc_info=True)
                time.sleep(_FLUSH_SECONDS)
                continue
            batch = []

    # -- steering ---------------------------------------------------------------------------------

    def _steer(self, upstream_id: str, timeout: float) -> None:
        """Every heartbeat: prove the mirror alive, and learn what was asked of the job
        (Cancel, Drain, or its end here) and forward it."""
        deadline = self._clock() + timeout
        forwarded: set[JobState] = set()
        while not self._ended.is_set():
            if self._clock() > deadline:
                cause = f"the job timed out after {timeout:g} s (--{JOB_TIMEOUT_SECONDS.name})"
                self._end_here(upstream_id, failure=cause)
                return
            try:
                state = self._channel.beat()
            except BeamjobsError:
                logger.warning("heartbeat failed", exc_info=True)
                state = None
            if state is not None and is_terminal(state):
                self._end_here(upstream_id)
                return
            if state in _STOPPING and state not in forwarded and self._forward(state, upstream_id):
                forwarded.add(state)
            self._ended.wait(self._heartbeat_seconds)

    def _copy_metrics(self, upstream_id: str) -> None:
        """Every heartbeat interval, copy the upstream's metrics when they changed."""
        metrics = b""
        while not self._ended.is_set():
            metrics = self._publish_metrics(upstream_id, unless=metrics)
            self._ended.wait(self._heartbeat_seconds)

    def _forward(self, state: JobState, upstream_id: str) -> bool:
        """Forward a Cancel or Drain; whether it was delivered. An engine that cannot drain
        is cancelled instead, and the job says so."""
        try:
            if state is JobState.DRAINING:
                try:
                    self._upstream.drain(upstream_id)
                except BeamjobsError as error:
                    if error.code not in ("UNIMPLEMENTED", "INTERNAL", "FAILED_PRECONDITION"):
                        raise
                    self._warn(
                        f"the upstream engine {self._engine} cannot drain the job ({error}): "
                        "cancelling it instead"
                    )
                    self._cancel(upstream_id)
            else:
                self._cancel(upstream_id)
        except BeamjobsError:
            logger.warning("forwarding %s to the upstream failed", state, exc_info=True)
            return False
        self._contact()
        return True

    def _publish_metrics(self, upstream_id: str, *, unless: bytes = b"") -> bytes:
        """Copy the upstream's metrics when they changed; the ones now published."""
        try:
            metrics = self._upstream.metrics(upstream_id)
            if metrics != unless:
                self._channel.publish_metrics(metrics)
        except BeamjobsError:
            logger.warning("copying the upstream's metrics failed", exc_info=True)
            return unless
        self._contact()
        return metrics

    def _end_here(self, upstream_id: str, *, failure: str | None = None) -> None:
        """The job ends here (`failure`: the cause the mirror fails it with; None when its end
        was recorded already): the upstream job is cancelled, and following stops."""
        with self._lock:
            self._failure = failure
        self._ended.set()
        try:
            self._cancel(upstream_id)
        except BeamjobsError:
            logger.warning("could not cancel upstream job %s", upstream_id, exc_info=True)
        self._stop_streams()

    def _cancel(self, upstream_id: str) -> None:
        """Cancel the upstream job, and its Flink job where the mirror reaches Flink: even when
        the job server is lost, which would leave the Flink job running with no one to stop it."""
        try:
            self._upstream.cancel(upstream_id)
        finally:
            if self._flink is not None:
                cancelled = self._flink.cancel(self._channel.job_id)
                logger.info("cancelled %d Flink jobs at %s", cancelled, self._flink.address)

    def _open(self, stream: Followed) -> Followed:
        with self._lock:
            self._streams.append(stream)
        return stream

    def _stop_streams(self) -> None:
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.cancel()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    [job_id] = argv
    settings = Settings.from_env(worker=True)
    if settings.stop_with_server:  # (a local server's mirror, started by it)
        end_with_parent(stop_own_group)
    secret, engine, endpoint = (
        settings.worker_secret,
        settings.upstream_engine,
        settings.upstream_endpoint,
    )
    own_prism = engine == PRISM and not endpoint
    if not (secret and engine and (endpoint or own_prism)):
        raise SystemExit(
            "a mirror needs BEAMJOBS_WORKER_SECRET, BEAMJOBS_UPSTREAM_ENGINE and "
            "BEAMJOBS_UPSTREAM_ENDPOINT (or, on the built-in prism engine, BEAMJOBS_PRISM)"
        )
    if own_prism and not settings.prism:
        raise SystemExit("a mirror of a job on the built-in prism engine needs BEAMJOBS_PRISM")
    reports, beats = channel_invokers(settings)
    channel = JobChannel(reports, job_id, secret, beats=beats)
    with contextlib.ExitStack() as stack:
        environments = None
        if own_prism:
            assert settings.prism  # checked above
            endpoint = stack.enter_context(local_prism(settings.prism))
            if settings.python_boot:
                files = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="boot-")))
                environments = functools.partial(
                    runnable_on_prism,
                    directory=files,
                    boot=settings.python_boot,
                    # A mirror on the built-in Prism runs with the workers' interpreter.
                    worker_python=settings.worker_python or sys.executable,
                )
        assert endpoint
        upstream = UpstreamJobService(endpoint)
        stack.callback(upstream.close)
        flink = dict(parse_engine(spec) for spec in settings.flink_rest).get(engine)
        Mirror(
            channel,
            upstream,
            engine,
            heartbeat_seconds=settings.heartbeat_seconds,
            lease_seconds=settings.lease_seconds,
            max_job_seconds=settings.max_job_seconds,
            flink=FlinkRest(flink) if flink else None,
            environments=environments,
        ).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
