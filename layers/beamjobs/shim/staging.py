"""Beam's ArtifactStagingService: the reverse-retrieval protocol, in which the server asks the
SDK to resolve each environment's dependencies and then to send each one's bytes.

Bytes go straight to S3 by content (beamjobs.aws.artifact_store.Upload): nothing is held in the shim
beyond one part, nothing half-written becomes visible, and bytes already stored are not stored
again. The session's outcome, the pipeline rewritten to the staged references, is recorded on
the preparation through the control handler, so any shim replica can serve the Run. A session
that ends early records what it staged; Run then refuses the job and names what is missing.

The staging token (beamjobs.domain.staging_tokens) is the preparer's alone. A session holds it by an
exclusive lease (a second session meanwhile is ABORTED); one that completes spends it, one
that ends early lets go of it, so that the client may stage again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from typing import Any

import grpc

from beamjobs.api import artifact_api_pb2, artifact_api_pb2_grpc, pipeline_pb2
from beamjobs.aws.artifact_store import ArtifactStore, Upload
from beamjobs.domain import staging_tokens
from beamjobs.domain.errors import (
    BeamjobsError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
)
from beamjobs.domain.jobs import STAGING_LEASE_SECONDS
from beamjobs.domain.limits import Quotas
from beamjobs.pipeline.dependencies import declared_sha256, display_name, reference, staged_sha256
from beamjobs.pipeline.validation import dependency_problems, parse_pipeline
from beamjobs.shim.auth import current_caller
from beamjobs.shim.backend import Backend, guarded
from beamjobs.shim.servicer import OpenStreams

logger = logging.getLogger(__name__)
Request = artifact_api_pb2.ArtifactRequestWrapper


class ArtifactStagingServicer(artifact_api_pb2_grpc.ArtifactStagingServiceServicer):
    def __init__(self, backend: Backend, quotas: Quotas, streams: OpenStreams) -> None:
        self._backend = backend
        self._quotas = quotas
        self._streams = streams
        # Recordings of sessions that ended early, kept until done (tasks are weakly held).
        self._recordings: set[asyncio.Task[Any]] = set()

    @guarded
    async def ReverseArtifactRetrievalService(self, request_iterator: Any, context: Any) -> None:
        with self._streams.open():
            await self._serve(context)

    async def _serve(self, context: Any) -> None:
        # Headers first: a session with nothing to stage would otherwise end trailers-only,
        # and the TypeScript SDK's client (protobuf-ts over grpc-js) then waits forever for
        # the response headers it never gets.
        await context.send_initial_metadata(())
        principal = current_caller().principal
        session = _Session(self._backend, context, principal, self._quotas)
        first = await session.read(first=True)
        job_id, token_sha256 = staging_tokens.parse(first.staging_token)
        lease = _Lease(self._backend, job_id, token_sha256)
        pipeline_ref, session.transferred = await lease.take()
        pipeline = parse_pipeline(
            await self._backend.staging(self._backend.stores.blobs.get, pipeline_ref)
        )
        keeping = asyncio.ensure_future(lease.keep())
        try:
            await session.stage(pipeline)
        except BaseException as ending:  # the client left, or sent something wrong
            # Recording what was staged lets go of the token, so the client may stage again.
            # A task of its own: the recording outlives the cancelled call it belongs to.
            task = asyncio.ensure_future(self._record_partial(lease, pipeline, session))
            self._recordings.add(task)
            task.add_done_callback(self._recordings.discard)
            if isinstance(ending, asyncio.CancelledError):
                logger.info("staging for %s ended by the client", job_id)
            raise
        finally:
            keeping.cancel()
        unstaged = await lease.record(pipeline, session.transferred)
        if unstaged:
            raise BeamjobsError(f"artifacts still unstaged after staging: {unstaged}")

    async def settle(self) -> None:
        """Wait for the recordings of sessions that ended early (before the shim exits)."""
        await asyncio.gather(*self._recordings, return_exceptions=True)

    async def _record_partial(
        self, lease: _Lease, pipeline: pipeline_pb2.Pipeline, session: _Session
    ) -> None:
        try:
            unstaged = await lease.record(pipeline, session.transferred)
        except Exception:  # the preparation keeps what it had; the lease lapses by itself
            logger.warning("could not record partial staging of %s", lease.job_id, exc_info=True)
        else:
            logger.info("staging of %s ended early; still unstaged: %s", lease.job_id, unstaged)


class _Lease:
    """One staging session's hold on its preparation's staging token: taken at the start,
    kept while the session lasts, let go of by recording the session's outcome."""

    def __init__(self, backend: Backend, job_id: str, token_sha256: str) -> None:
        self._backend = backend
        self.job_id = job_id
        self._token_sha256 = token_sha256
        self._session = uuid.uuid4().hex

    async def take(self) -> tuple[str, int]:
        """Take (or extend) the lease; the reference of the pipeline to stage, and the bytes
        its earlier sessions received."""
        result = await self._backend.call(
            "BeginStaging",
            {
                "preparation_id": self.job_id,
                "token_sha256": self._token_sha256,
                "session": self._session,
            },
        )
        return str(result["pipeline_ref"]), int(result.get("artifact_bytes", 0))

    async def keep(self) -> None:
        """Extend the lease well before it would lapse, until cancelled."""
        while True:
            await asyncio.sleep(STAGING_LEASE_SECONDS / 5)
            try:
                await self.take()
            except BeamjobsError:  # a passing failure: the next extension may succeed
                logger.warning("could not extend the staging lease of %s", self.job_id)

    async def record(self, pipeline: pipeline_pb2.Pipeline, artifact_bytes: int) -> list[str]:
        blobs = self._backend.stores.blobs
        ref = await self._backend.staging(
            blobs.put_content, "pipelines", pipeline.SerializeToString()
        )
        result = await self._backend.call(
            "RecordStaging",
            {
                "preparation_id": self.job_id,
                "session": self._session,
                "pipeline_ref": ref,
                "artifact_bytes": artifact_bytes,
            },
        )
        return list(result["unstaged"])


class _Session:
    """One staging stream: reads the SDK's responses, writes requests, stages each distinct
    artifact once, and rewrites the pipeline's dependencies as it goes."""

    def __init__(self, backend: Backend, context: Any, principal: str, quotas: Quotas) -> None:
        self._backend = backend
        self._artifacts: ArtifactStore = backend.stores.artifacts
        self._context = context
        self._principal = principal
        self._quotas = quotas
        self._staged: dict[bytes, Any] = {}
        # Bytes received for the job, in this session and the ones before it: against its
        # artifact quota.
        self.transferred = 0

    async def read(self, expected: str | None = None, *, first: bool = False) -> Any:
        idle = self._quotas.staging_idle_seconds
        try:
            async with asyncio.timeout(idle):
                response = await self._context.read()
        except TimeoutError:
            raise DeadlineExceeded(
                f"the staging session sent nothing for {idle:g} s (the idle limit)"
            ) from None
        if response is grpc.aio.EOF and first:
            raise InvalidArgument(
                "the first message of a staging session carries the staging token"
            )
        if response is grpc.aio.EOF:
            raise FailedPrecondition("the client ended artifact staging before it was complete")
        if expected is not None and response.WhichOneof("response") != expected:
            raise InvalidArgument(f"expected {expected}, got {response.WhichOneof('response')}")
        return response

    async def stage(self, pipeline: pipeline_pb2.Pipeline) -> None:
        """Stage every unstaged dependency of every environment."""
        for env in pipeline.components.environments.values():
            held = [await self._held(a) for a in env.dependencies]
            pending = [a for a, is_held in zip(env.dependencies, held, strict=True) if not is_held]
            if not pending:
                continue
            await self._context.write(
                Request(
                    resolve_artifact=artifact_api_pb2.ResolveArtifactsRequest(artifacts=pending)
                )
            )
            resolved = (await self.read("resolve_artifact_response")).resolve_artifact_response
            problems = dependency_problems("the resolution", resolved.replacements)
            if problems:
                raise InvalidArgument("; ".join(problems))
            # The resolution stands for what it resolved: the environment now depends on it.
            kept = [a for a, is_held in zip(env.dependencies, held, strict=True) if is_held]
            del env.dependencies[:]
            env.dependencies.extend([*kept, *resolved.replacements])
            for index in range(len(kept), len(env.dependencies)):
                env.dependencies[index].CopyFrom(await self._stage(env.dependencies[index]))

    async def _held(self, artifact: pipeline_pb2.ArtifactInformation) -> bool:
        """Whether the artifact is staged here from bytes this principal sent. One staged by
        someone else is pending like any other: its bytes are asked for (knowing a hash is not
        having the bytes)."""
        sha = staged_sha256(self._artifacts.location, artifact)
        return sha is not None and await self._reused(sha)

    async def _stage(self, artifact: pipeline_pb2.ArtifactInformation) -> Any:
        key = artifact.SerializeToString(deterministic=True)
        if key not in self._staged:
            # A declared hash stands for bytes only this principal sent before: anyone else
            # must send them (else knowing a hash would attach someone else's artifact).
            sha = declared_sha256(artifact)
            if not (sha and await self._reused(sha)):
                sha = await self._transfer(artifact, sha)
                await self._backend.staging(self._artifacts.mark_staged_by, sha, self._principal)
            self._staged[key] = reference(self._artifacts.location, sha, artifact)
            # A hash's prefix only: logs are read more widely than artifacts, and a full hash
            # is what a staging call presents for bytes it did not send.
            logger.info("staged %s as %s…", display_name(artifact), sha[:12])
        return self._staged[key]

    async def _reused(self, sha: str) -> bool:
        """Whether this principal's bytes of `sha` are stored (and so renewed for this job)."""
        reused = functools.partial(self._artifacts.reused, now=time.time())
        return bool(await self._backend.staging(reused, sha, self._principal))

    async def _transfer(self, artifact: pipeline_pb2.ArtifactInformation, declared: str) -> str:
        """Ask for the artifact's bytes and stream them to S3; return their sha256."""
        await self._context.write(
            Request(get_artifact=artifact_api_pb2.GetArtifactRequest(artifact=artifact))
        )
        quota = self._quotas.artifact_bytes_per_job
        upload: Upload = self._artifacts.upload(
            max_bytes=quota - self.transferred, quota_bytes=quota
        )
        try:
            while True:
                chunk = await self.read("get_artifact_response")
                if chunk.get_artifact_response.data:
                    await self._backend.staging(upload.write, chunk.get_artifact_response.data)
                if chunk.is_last:
                    sha = str(await self._backend.staging(upload.finish, declared))
                    self.transferred += upload.size
                    return sha
        except BaseException:
            # Bytes received count even for an artifact never finished: a client that leaves
            # mid-artifact and stages again does not get its quota back.
            self.transferred += upload.size
            # Not awaited: the call may be cancelled already. S3 forgets the parts.
            asyncio.get_running_loop().run_in_executor(self._backend.pools.staging, upload.abort)
            raise
