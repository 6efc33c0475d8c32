"""The job service's operations, one per Job API RPC. Lambda handlers call these; every rule
about jobs lives here or below (states, store), never in a handler or the shim."""

from __future__ import annotations

import functools
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf import message as protobuf

from beamjobs.aws import malformed_items
from beamjobs.aws.fargate import task_size
from beamjobs.domain import poison
from beamjobs.domain.blobs import BlobStore
from beamjobs.domain.engines import EngineChoice, Engines
from beamjobs.domain.errors import FailedPrecondition, InvalidArgument, MalformedItem, Unavailable
from beamjobs.domain.executor import ExecutorError, UnrunnableJob
from beamjobs.domain.failures import Failure, failure_of
from beamjobs.domain.identity import Caller
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.limits import Quotas
from beamjobs.domain.listing import job_query, page_size, page_token, resume_after
from beamjobs.domain.model import IMPORTANCES, Job, Message, message_id
from beamjobs.domain.options import job_options, option_key
from beamjobs.domain.staging_tokens import SHA256
from beamjobs.domain.states import JobState, is_terminal
from beamjobs.domain.worker_secrets import keep_worker_secret, mint_worker_secret, secret_sha256
from beamjobs.pipeline.artifacts import ArtifactLocation
from beamjobs.pipeline.summary import (
    ArtifactView,
    EnvironmentView,
    dependencies,
    docker_images,
    environments,
    is_bounded,
    summarize,
)
from beamjobs.pipeline.validation import check_prepare, parse_pipeline, require_id

# Options larger than this stay only in S3; the record keeps the reference.
_MAX_INLINE_OPTIONS = 32_000
# GetJobs answers with at most this many jobs, newest first, in at most this many bytes (a
# Lambda response is at most 6 MB; the rest is room for the answer's envelope).
GET_JOBS_LIMIT = 1000
GET_JOBS_MAX_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class JobDetail:
    """A job in full, as GetJob answers it."""

    job: Job
    # (state, since when), oldest first.
    history: list[tuple[JobState, float]]
    environments: list[EnvironmentView]
    dependencies: list[ArtifactView]
    worker_vcpu: float
    worker_memory_mb: int
    # Why it failed, at a glance (beamjobs.domain.failures), when it did.
    failure: Failure | None = None


@dataclass(frozen=True)
class MessagePage:
    # (message id, message), oldest first.
    messages: list[tuple[str, Message]]
    # Where the next page starts (the last event read).
    next_token: str
    # The job had ended when this was read, and every message is in.
    ended: bool


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    job_name: str
    state: JobState
    options: dict[str, Any]


def admit(
    quotas: Quotas, engines: EngineChoice, pipeline: protobuf.Message, options: dict[str, Any]
) -> str:
    """The engine of a well-formed Prepare, if the deployment admits it: ResourceExhausted when
    it asks for more than a principal may have (a larger worker, a DOCKER image not allowed),
    and the engine choice's refusals (beamjobs.domain.engines). The shim checks before it stores the
    pipeline, the handler again (it may be invoked directly)."""
    cpu, memory = task_size(options)
    quotas.check_worker(int(cpu) / 1024, int(memory))
    quotas.check_images(docker_images(pipeline))
    return engines.choose(options, bounded=is_bounded(pipeline))


def new_job_id(job_name: str) -> str:
    """A readable prefix from the job's name and 128 random bits: unguessable, unique."""
    slug = re.sub(r"[^a-z0-9]+", "-", job_name.lower()).strip("-")[:40] or "job"
    return f"{slug}-{secrets.token_hex(16)}"


class StagedArtifacts(Protocol):
    """Where artifacts are staged, and which principal sent which (beamjobs.aws.artifact_store)."""

    location: ArtifactLocation

    def staged_by(self, sha256: str, principal: str) -> bool: ...


class JobControl:
    """Prepare, Run, Cancel, Drain: the operations that write jobs and start or stop work. The
    job aggregate decides; this starts and stops the work its decisions call for."""

    def __init__(
        self,
        jobs: Jobs,
        blobs: BlobStore,
        engines: Engines,
        artifacts: StagedArtifacts,
        quotas: Quotas,
    ) -> None:
        self._jobs = jobs
        self._blobs = blobs
        self._engines = engines
        self._artifacts = artifacts
        self._quotas = quotas

    def prepare(
        self,
        caller: Caller,
        *,
        pipeline_ref: str,
        options: dict[str, Any],
        job_name: str,
        staging_token_sha256: str,
    ) -> str:
        """Record a job of the caller's in STOPPED for a pipeline already stored at
        `pipeline_ref`, stageable with the token whose secret has `staging_token_sha256`;
        return its id, which is both the preparation id and the job id."""
        if not isinstance(staging_token_sha256, str) or not SHA256.fullmatch(staging_token_sha256):
            raise InvalidArgument("staging_token_sha256 must be a sha256 in hex")
        # Checked whole now (the shim checked before storing the pipeline): a bad value is the
        # client's mistake (INVALID_ARGUMENT), not a job that fails when it starts.
        pipeline_bytes = self._blobs.get(pipeline_ref)
        pipeline = check_prepare(pipeline_bytes, options, job_name)
        engine = admit(self._quotas, self._engines.choice, pipeline, options)
        # A dependency staged already is the caller's only if the caller staged it: any other
        # is unstaged, and its bytes are asked of the caller's SDK.
        summary = summarize(
            pipeline,
            self._artifacts.location,
            functools.partial(self._artifacts.staged_by, principal=caller.principal),
        )
        # SDKs always send job_name "job"; the user's --job_name travels in the options.
        name = str(options.get(option_key("job_name")) or job_name or "job")
        options_json = json.dumps(options, sort_keys=True, separators=(",", ":"))
        options_ref = self._blobs.put_content("options", options_json.encode())
        now = self._jobs.store.now()
        job_id = new_job_id(name)
        # Kept before the job exists: a job is never without its worker's secret.
        secret = mint_worker_secret()
        keep_worker_secret(self._blobs, job_id, secret)
        job = Job(
            job_id=job_id,
            job_name=name,
            state=JobState.STOPPED,
            state_time=now,
            seq=1,
            created_at=now,
            pipeline_ref=pipeline_ref,
            options_ref=options_ref,
            options_json=options_json if len(options_json) <= _MAX_INLINE_OPTIONS else None,
            bounded=summary.bounded,
            environment_urns=summary.environment_urns,
            unstaged=summary.unstaged,
            artifacts=summary.staged,
            owner=caller.principal,
            staging_token_sha256=staging_token_sha256,
            worker_secret_sha256=secret_sha256(secret),
            engine=engine,
        )
        self._jobs.prepare(job)
        return job.job_id

    def begin_staging(
        self, caller: Caller, preparation_id: str, token_sha256: str, session: str
    ) -> Job:
        """`session` takes (or extends) the lease on the preparation's staging token; returns
        the preparation (the pipeline to stage, and the artifact bytes received before)."""
        job_id = require_id(preparation_id, "preparation_id")
        if not isinstance(token_sha256, str) or not isinstance(session, str) or not session:
            raise InvalidArgument("token_sha256 and session are required")
        return self._jobs.lease_staging(job_id, token_sha256, session, caller)

    def record_staging(
        self,
        caller: Caller,
        preparation_id: str,
        session: str,
        pipeline_ref: str,
        artifact_bytes: Any = 0,
    ) -> list[str]:
        """A staging session's outcome: the pipeline with the artifacts staged so far
        rewritten to their staged references, and the artifact bytes received so far (in
        every session). Returns what is still unstaged (nothing once the session completed),
        which Run refuses to start with."""
        job_id = require_id(preparation_id, "preparation_id")
        if not isinstance(artifact_bytes, int) or isinstance(artifact_bytes, bool):
            raise InvalidArgument("artifact_bytes must be a whole number")
        # The shim's staging session rewrote the pipeline: each dependency it left staged, or
        # staged, was sent by this caller (beamjobs.shim.staging).
        summary = summarize(
            parse_pipeline(self._blobs.get(pipeline_ref)),
            self._artifacts.location,
            held=lambda sha256: True,
        )
        self._jobs.stage(
            job_id,
            session,
            pipeline_ref,
            summary.unstaged,
            caller,
            artifacts=summary.staged,
            artifact_bytes=artifact_bytes,
        )
        return list(summary.unstaged)

    def run(self, caller: Caller, preparation_id: str) -> str:
        """Start a prepared job, once: a Run retried while the job is STARTING starts its work
        again (which is idempotent), and one after that answers the job's id."""
        job_id = require_id(preparation_id, "preparation_id")
        job = self._jobs.start(job_id, caller, concurrent_jobs=self._quotas.concurrent_jobs)
        if job.state is JobState.STARTING:
            try:
                self._engines.start(job)
            except ExecutorError as error:
                cause = f"the job could not be started: {error}"
                self._jobs.fail(job.job_id, cause)
                if isinstance(error, UnrunnableJob):
                    raise FailedPrecondition(cause) from error
                raise Unavailable(cause) from error
        return job.job_id

    def cancel(self, caller: Caller, job_id: str) -> JobState:
        """Cancel: a job never run is CANCELLED at once; a starting or running one becomes
        CANCELLING and its work is stopped; a finished one answers with its final state."""
        job = self._jobs.cancel(require_id(job_id), caller)
        if job.state is JobState.CANCELLING:
            self._stop(job)
        return job.state

    def drain(self, caller: Caller, job_id: str) -> JobState:
        """Drain a streaming job: stop reading, finish in-flight work."""
        job = self._jobs.drain(require_id(job_id), caller)
        if job.state is JobState.DRAINING:
            self._stop(job)
        return job.state

    def _stop(self, job: Job) -> None:
        try:
            self._engines.stop(job)
        except ExecutorError as error:
            raise Unavailable(f"could not stop job {job.job_id}: {error}") from error


class JobQueries:
    """The read-only operations."""

    def __init__(self, jobs: Jobs, blobs: BlobStore, artifacts: ArtifactLocation) -> None:
        self._jobs = jobs
        self._blobs = blobs
        self._artifacts = artifacts

    def now(self) -> float:
        return self._jobs.now()

    def page(
        self, caller: Caller, *, size: int = 0, token: str = "", **filters: Any
    ) -> tuple[list[Job], str]:
        """ListJobs: a page of the caller's jobs that `filters` admit (beamjobs.domain.listing's
        job_query), newest first, and the next page's token ("" at the end)."""
        query = job_query(caller, **filters)
        page = self._jobs.store.job_page(query, page_size(size), after=resume_after(query, token))
        return page.jobs, page_token(query, page.next_after)

    def detail(self, caller: Caller, job_id: str) -> JobDetail:
        """GetJob: the job with its history, environments, dependencies and worker size."""
        job = self.get(caller, job_id)
        events = self._jobs.store.events(job.job_id)
        history = [(event.state, event.time) for event in events if event.state is not None]
        # The cause is the error the FAILED event carries.
        failure = next(
            (
                failure_of(message.text)
                for event in events
                if event.state is JobState.FAILED
                for message in event.messages
                if message.importance == "JOB_MESSAGE_ERROR"
            ),
            None,
        )
        try:
            pipeline = parse_pipeline(self._blobs.get(job.pipeline_ref))
            cpu, memory = task_size(job_options(job, self._blobs))
        except InvalidArgument as error:  # it was checked at Prepare: the stored copy is bad
            raise poison.malformed(f"pipeline of job {job.job_id}", error) from error
        return JobDetail(
            job,
            history,
            environments(pipeline),
            dependencies(pipeline, self._artifacts),
            int(cpu) / 1024,
            int(memory),
            failure,
        )

    def messages(
        self, caller: Caller, job_id: str, *, minimum_importance: str = "", token: str = ""
    ) -> MessagePage:
        """ListMessages: the job's messages after `token` (from the start when ""), oldest
        first, a page of about a megabyte at a time."""
        if not isinstance(token, str) or (token and not (token.isdigit() and len(token) <= 12)):
            raise InvalidArgument("page_token is not one this service gave")
        if minimum_importance not in ("", *IMPORTANCES):
            raise InvalidArgument(f"minimum_importance must be one of {', '.join(IMPORTANCES)}")
        after = int(token or 0)
        # The job is read first: if it had ended, its last event is in the log already.
        ended = is_terminal(self.get(caller, job_id).state)
        page = self._jobs.store.event_page(job_id, after)
        messages = [
            (message_id(event.seq, index), message)
            for event in page.events
            for index, message in enumerate(event.messages)
            if message.at_least(minimum_importance)
        ]
        last = page.events[-1].seq if page.events else after
        return MessagePage(messages, str(last), ended and page.complete)

    def get(self, caller: Caller, job_id: str) -> Job:
        return self._jobs.get(require_id(job_id), caller)

    def list_jobs(self, caller: Caller) -> list[JobInfo]:
        """Beam's GetJobs for the caller, bounded: the newest GET_JOBS_LIMIT jobs the caller
        owns (every job, for an admin), as many of them as fit in
        GET_JOBS_MAX_BYTES (measured as the JSON they are answered in), so the answer stays
        within a Lambda response's 6 MB whatever the number of jobs stored."""
        infos: list[JobInfo] = []
        size = 0
        for job in self._jobs.recent(GET_JOBS_LIMIT, caller):
            try:
                options = job_options(job, self._blobs)
            except MalformedItem as error:
                malformed_items.skipped("GetJobs", job.job_id, error)
                continue
            info = JobInfo(job.job_id, job.job_name, job.state, options)
            size += len(json.dumps([info.job_id, info.job_name, info.options]).encode())
            if size > GET_JOBS_MAX_BYTES:
                break
            infos.append(info)
        return infos
