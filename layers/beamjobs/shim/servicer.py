"""The Job API over gRPC: each unary RPC becomes a handler event; the two streams follow the
job's stored events; pipelines and metrics travel between shim and handlers by S3 reference."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from google.protobuf import json_format

from beamjobs.api import endpoints_pb2, job_api_pb2, job_api_pb2_grpc
from beamjobs.app import answers
from beamjobs.app.service import admit
from beamjobs.domain import staging_tokens
from beamjobs.domain.engines import EngineChoice
from beamjobs.domain.errors import FailedPrecondition, InvalidArgument
from beamjobs.domain.jobs import Jobs, owned
from beamjobs.domain.limits import Quotas, exceeded
from beamjobs.domain.model import Event, Job, message_id
from beamjobs.domain.states import JobState as States
from beamjobs.pipeline.validation import check_prepare, require_id
from beamjobs.proto_json import from_answer
from beamjobs.shim import streams
from beamjobs.shim.auth import current_caller
from beamjobs.shim.backend import Backend, guarded
from beamjobs.shim.changefeed import CLOSED, ChangeFeed

JobState = job_api_pb2.JobState
STATE_STREAM_END_PAUSE_SECONDS = 2.0


class OpenStreams:
    """The streams open now (job streams and staging sessions), by principal: so that a
    stopping shim can let them end, and no principal holds more than its quota."""

    def __init__(self, per_principal: int) -> None:
        self._per_principal = per_principal
        self._count = 0
        self._by_principal: dict[str, int] = {}
        self._none = asyncio.Event()
        self._none.set()

    @contextlib.contextmanager
    def open(self) -> Iterator[None]:
        """One more stream of the current caller's (ResourceExhausted past the quota)."""
        principal = current_caller().principal
        held = self._by_principal.get(principal, 0)
        if held >= self._per_principal:
            raise exceeded("open streams", str(self._per_principal), f"{held} open")
        self._by_principal[principal] = held + 1
        self._count += 1
        self._none.clear()
        try:
            yield
        finally:
            self._count -= 1
            self._by_principal[principal] -= 1
            if not self._by_principal[principal]:
                del self._by_principal[principal]
            if self._count == 0:
                self._none.set()

    async def drained(self, timeout: float) -> None:
        """Wait until no stream is open, for at most `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # cancellable, unlike 3.11's wait_for
                await self._none.wait()


def _options(struct: Any) -> dict[str, Any]:
    """Pipeline options as JSON (InvalidArgument for numbers JSON cannot hold: NaN, ±inf)."""
    try:
        return dict(json_format.MessageToDict(struct))
    except (ValueError, json_format.Error) as error:
        raise InvalidArgument(f"pipeline_options cannot be read: {error}") from None


def _messages(event: Event) -> list[job_api_pb2.JobMessagesResponse]:
    """One response per message of a stored batch."""
    return [
        job_api_pb2.JobMessagesResponse(
            message_response=answers.job_message(message_id(event.seq, index), message)
        )
        for index, message in enumerate(event.messages)
    ]


class JobServicer(job_api_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        backend: Backend,
        feed: ChangeFeed,
        staging_endpoint: str,
        streams: OpenStreams,
        quotas: Quotas,
        engines: EngineChoice,
    ) -> None:
        self._quotas = quotas
        self._engines = engines
        self._stores = backend.stores
        self._feed = feed
        self._streams = streams
        self._blocking = backend.blocking
        self._call = backend.call
        # Where SDKs stage artifacts: this shim's ArtifactStagingService, as clients reach it.
        self._staging_endpoint = staging_endpoint

    @guarded
    async def Prepare(self, request: Any, context: Any) -> Any:
        options = _options(request.pipeline_options)
        # Checked, and counted against the caller's quota, before anything is stored: a
        # refused Prepare leaves nothing behind.
        pipeline = await self._blocking(check_prepare, request.pipeline, options, request.job_name)
        admit(self._quotas, self._engines, pipeline, options)
        await self._blocking(Jobs(self._stores.jobs).admit_prepare, current_caller(), self._quotas)
        # The pipeline can be far larger than a Lambda payload: the handler gets an S3 key.
        pipeline_ref = await self._blocking(
            self._stores.blobs.put_content, "pipelines", request.pipeline
        )
        # The staging token's secret goes to the preparer alone; the job keeps its hash.
        secret = staging_tokens.mint()
        result = await self._call(
            "Prepare",
            {
                "pipeline_ref": pipeline_ref,
                "pipeline_options": options,
                "job_name": request.job_name,
                "staging_token_sha256": staging_tokens.digest(secret),
            },
        )
        return job_api_pb2.PrepareJobResponse(
            preparation_id=result["preparation_id"],
            artifact_staging_endpoint=endpoints_pb2.ApiServiceDescriptor(
                url=self._staging_endpoint
            ),
            staging_session_token=staging_tokens.token(result["preparation_id"], secret),
        )

    @guarded
    async def Run(self, request: Any, context: Any) -> Any:
        result = await self._call("Run", {"preparation_id": request.preparation_id})
        return job_api_pb2.RunJobResponse(job_id=result["job_id"])

    @guarded
    async def GetJobs(self, request: Any, context: Any) -> Any:
        result = await self._call("GetJobs", {})
        return from_answer(result, job_api_pb2.GetJobsResponse())

    @guarded
    async def GetState(self, request: Any, context: Any) -> Any:
        # A job this shim follows, while the change feed is as fresh as a read, is answered
        # as the feed last saw it; any other from the table, by the query function.
        followed = self._followed(request.job_id)
        if followed is not None:
            return answers.state_event(followed.state, followed.state_time)
        result = await self._call("GetState", {"job_id": request.job_id})
        return answers.state_event(States(result["state"]), result["timestamp"])

    @guarded
    async def GetPipeline(self, request: Any, context: Any) -> Any:
        result = await self._call("GetPipeline", {"job_id": request.job_id})
        pipeline = await self._blocking(self._stores.blobs.get, result["pipeline_ref"])
        return job_api_pb2.GetJobPipelineResponse(pipeline=pipeline)

    @guarded
    async def Cancel(self, request: Any, context: Any) -> Any:
        result = await self._call("Cancel", {"job_id": request.job_id})
        return job_api_pb2.CancelJobResponse(state=JobState.Enum.Value(result["state"]))

    @guarded
    async def Drain(self, request: Any, context: Any) -> Any:
        result = await self._call("Drain", {"job_id": request.job_id})
        return job_api_pb2.DrainJobResponse(state=JobState.Enum.Value(result["state"]))

    @guarded
    async def GetJobMetrics(self, request: Any, context: Any) -> Any:
        result = await self._call("GetJobMetrics", {"job_id": request.job_id})
        metrics = job_api_pb2.MetricResults()
        if result["metrics_ref"]:
            metrics.ParseFromString(
                await self._blocking(self._stores.blobs.get, result["metrics_ref"])
            )
        return job_api_pb2.GetJobMetricsResponse(metrics=metrics)

    @guarded
    async def DescribePipelineOptions(self, request: Any, context: Any) -> Any:
        result = await self._call("DescribePipelineOptions", {})
        return from_answer(result, job_api_pb2.DescribePipelineOptionsResponse())

    @guarded
    async def GetStateStream(self, request: Any, context: Any) -> Any:
        job_id = require_id(request.job_id)
        with self._streams.open():  # counted first: refused without reading the table
            await self._refuse_a_deadline_before_run(await self._owned(job_id), context)
            async with contextlib.aclosing(self._follow(job_id, context)) as events:
                async for event in events:
                    if event.state is not None:
                        yield answers.state_event(event.state, event.time)
            # Nothing follows the terminal state. The stream still ends a moment later, not at
            # once: Beam's Python SDK stops reading at the terminal state without cancelling,
            # and a server-side end racing that was seen to hang the SDK process's exit inside
            # grpcio (about 1 run in 10; never with this pause, which the SDK cancels at exit).
            await asyncio.sleep(STATE_STREAM_END_PAUSE_SECONDS)

    @guarded
    async def GetMessageStream(self, request: Any, context: Any) -> Any:
        job_id = require_id(request.job_id)
        with self._streams.open():
            await self._refuse_a_deadline_before_run(await self._owned(job_id), context)
            async with contextlib.aclosing(self._follow(job_id, context)) as events:
                async for event in events:
                    # An event's messages come before its state: a FAILED job's cause is in
                    # the FAILED event, and SDKs stop reading at the terminal state.
                    for response in _messages(event):
                        yield response
                    if event.state is not None:
                        yield job_api_pb2.JobMessagesResponse(
                            state_response=answers.state_event(event.state, event.time)
                        )

    async def _owned(self, job_id: str) -> Job:
        """The job, if the caller owns it (NOT_FOUND otherwise, as for a job that is not); the
        change feed follows it from now on. A job followed already is not read again while the
        feed is as fresh as a read (an SDK opens two streams on each job)."""
        followed = self._followed(job_id)
        if followed is not None:
            return followed
        job = await self._blocking(Jobs(self._stores.jobs).get, job_id, current_caller())
        self._feed.followed.remember(job)
        return job

    def _followed(self, job_id: str) -> Job | None:
        """The job as the change feed last saw it, if the feed follows it and is as fresh as a
        read (NOT_FOUND if the caller does not own it); else None."""
        job = self._feed.followed.get(job_id) if self._feed.current else None
        return None if job is None else owned(job, current_caller())

    async def _refuse_a_deadline_before_run(self, job: Job, context: Any) -> None:
        """Beam's Python SDK opens both streams before Run with its --job_server_timeout (60 s
        up to 2.5x, 300 s since) as their deadline, so any job that outlasts it would fail at
        the client. Refused, the SDK opens them again after Run without a deadline, as it does
        with job servers whose job ids differ from preparation ids; nothing is lost, as every
        stream replays the job's history."""
        if context.time_remaining() is None:
            return
        if job.state is States.STOPPED:
            raise FailedPrecondition(
                f"job {job.job_id} has not been run: a stream with a deadline, opened now, would "
                "end at that deadline rather than at the job's end; open it after Run"
            )

    def _follow(self, job_id: str, context: Any) -> Any:
        # A stream the client cancelled while its handler waited is abandoned, not always
        # cancelled, and only the garbage collector would close it: its subscription is ended
        # when the RPC ends, which ends the follower too (at its next read). An RPC that ended
        # already (cancelled while its job was read) would never call back: it gets none.
        if context.done():
            raise asyncio.CancelledError
        subscription = self._feed.subscribe(job_id)

        def ended(_: Any) -> None:
            self._feed.unsubscribe(subscription)
            subscription.offer(CLOSED)

        context.add_done_callback(ended)
        return streams.follow(
            self._stores.jobs, self._feed, job_id, self._blocking, subscription=subscription
        )
