"""The dashboard: the jobs list and a page per job, in the browser, with live updates.

It is a client of a Job API endpoint like any other (Beam's JobService and Beamjobs' Jobs
service), so it sees what its caller may see: `beamjobs serve` runs it against its own shim,
`beamjobs connect` against the proxy, which adds the user's identity. Its pages are static
files shipped with the package (no build step); they read the JSON and server-sent events
under /api. It answers only requests addressed to this machine (the Host header names a
loopback address: no DNS rebinding), and a Cancel needs a header no other site's page can send
without this server's consent (no cross-site request forgery).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from beamjobs.api import job_api_pb2, job_api_pb2_grpc, jobs_pb2, jobs_pb2_grpc, pipeline_pb2
from beamjobs.pipeline.graph import pcollection_names, pipeline_graph
from beamjobs.pipeline.metrics import job_metrics
from beamjobs.proto_json import as_json

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# The header a page of the dashboard sends with a Cancel.
REQUEST_HEADER = "X-Beamjobs-Request"
# How often the jobs list is read again for a page that follows it.
LIST_REFRESH_SECONDS = 1.0
# The jobs whose PCollection names are kept (the most recently shown).
_NAMES_KEPT = 256
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}
JobState = job_api_pb2.JobState


class Dashboard:
    """The dashboard's routes over one channel to the Job API."""

    def __init__(self, channel: grpc.aio.Channel, health: Callable[[], tuple[bool, str]]) -> None:
        self._jobs = jobs_pb2_grpc.JobsStub(channel)
        self._job_api = job_api_pb2_grpc.JobServiceStub(channel)
        self._health = health
        self._names: OrderedDict[str, dict[str, str]] = OrderedDict()

    def app(self, *, pages: bool = True) -> web.Application:
        """The application; without `pages`, /healthz alone (the deployed shim's)."""
        app = web.Application(middlewares=[_this_machine_only, _errors_as_json])
        app.add_routes([web.get("/healthz", self.healthz)])
        if not pages:
            return app
        app.add_routes(
            [
                web.get("/", _page("index.html")),
                web.get("/jobs/{job_id}", _page("job.html")),
                web.static("/static", STATIC),
                web.get("/api/jobs", self.list_jobs),
                web.get("/api/jobs/live", self.live_jobs),
                web.get("/api/jobs/{job_id}", self.get_job),
                web.get("/api/jobs/{job_id}/metrics", self.metrics),
                web.get("/api/jobs/{job_id}/graph", self.graph),
                web.get("/api/jobs/{job_id}/live", self.live_job),
                web.post("/api/jobs/{job_id}/cancel", self.cancel),
            ]
        )
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the shim should get calls, else 503; the text says why (Shim.health)."""
        healthy, why = self._health()
        return web.Response(status=200 if healthy else 503, text=f"{why}\n")

    async def list_jobs(self, request: web.Request) -> web.Response:
        page = await self._jobs.ListJobs(_listing(request))
        return web.json_response(as_json(page))

    async def live_jobs(self, request: web.Request) -> web.StreamResponse:
        """The first page of the list as server-sent events: again whenever it changes."""
        listing = _listing(request)
        stream = await _event_stream(request)
        last = None
        with contextlib.suppress(ConnectionResetError):  # the tab was closed
            while not _left(request):
                page = as_json(await self._jobs.ListJobs(listing))
                if page != last:
                    await _send(stream, "jobs", page)
                    last = page
                await asyncio.sleep(LIST_REFRESH_SECONDS)
        return stream

    async def get_job(self, request: web.Request) -> web.Response:
        detail = await self._jobs.GetJob(jobs_pb2.GetJobRequest(job_id=_job_id(request)))
        return web.json_response(as_json(detail))

    async def metrics(self, request: web.Request) -> web.Response:
        job_id = _job_id(request)
        answer = await self._job_api.GetJobMetrics(job_api_pb2.GetJobMetricsRequest(job_id=job_id))
        names = await self._pcollection_names(job_id)
        return web.json_response([asdict(m) for m in job_metrics(answer.metrics, names)])

    async def graph(self, request: web.Request) -> web.Response:
        pipeline = await self._pipeline(_job_id(request))
        return web.json_response(asdict(pipeline_graph(pipeline)))

    async def live_job(self, request: web.Request) -> web.StreamResponse:
        """The job's messages and states, from the first, as server-sent events until its end
        (Beam's message stream, which replays what is stored and follows the job)."""
        call = self._job_api.GetMessageStream(
            job_api_pb2.JobMessagesRequest(job_id=_job_id(request))
        )
        # Opened (and its errors answered as JSON) before the event stream starts.
        first = await call.read()
        stream = await _event_stream(request)
        try:
            response = first
            while response is not grpc.aio.EOF:
                if response.HasField("message_response"):
                    await _send(stream, "message", as_json(response.message_response))
                else:
                    await _send(stream, "state", as_json(response.state_response))
                response = await call.read()
            await _send(stream, "end", {})
        except grpc.aio.AioRpcError as error:  # the stream started: say it as an event
            await _send(stream, "failure", _error(error))
        except ConnectionResetError:  # the tab was closed
            pass
        finally:
            call.cancel()
        return stream

    async def cancel(self, request: web.Request) -> web.Response:
        if request.headers.get(REQUEST_HEADER) != "1":
            raise web.HTTPForbidden(text=f"a Cancel needs the header {REQUEST_HEADER}: 1")
        answer = await self._job_api.Cancel(job_api_pb2.CancelJobRequest(job_id=_job_id(request)))
        return web.json_response({"state": JobState.Enum.Name(answer.state)})

    async def _pcollection_names(self, job_id: str) -> dict[str, str]:
        """A job's PCollection names, read once: a job page asks for metrics every two seconds
        while the job runs, and a pipeline may be tens of megabytes (its names never change)."""
        if job_id not in self._names:
            self._names[job_id] = pcollection_names(await self._pipeline(job_id))
            while len(self._names) > _NAMES_KEPT:
                self._names.popitem(last=False)
        self._names.move_to_end(job_id)
        return self._names[job_id]

    async def _pipeline(self, job_id: str) -> pipeline_pb2.Pipeline:
        answer = await self._job_api.GetPipeline(job_api_pb2.GetJobPipelineRequest(job_id=job_id))
        return pipeline_pb2.Pipeline.FromString(answer.pipeline)


def _job_id(request: web.Request) -> str:
    return request.match_info["job_id"]


def _listing(request: web.Request) -> jobs_pb2.ListJobsRequest:
    query = request.query
    try:
        states = [JobState.Enum.Value(state.upper()) for state in query.getall("state", [])]
        page_size = int(query.get("page_size", "0"))
    except ValueError as error:
        raise web.HTTPBadRequest(text=f"bad filter: {error}") from None
    return jobs_pb2.ListJobsRequest(
        states=states,
        name_prefix=query.get("name", ""),
        page_size=page_size,
        page_token=query.get("page_token", ""),
    )


def _page(name: str) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / name)

    return page


async def _event_stream(request: web.Request) -> web.StreamResponse:
    stream = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await stream.prepare(request)
    return stream


def _left(request: web.Request) -> bool:
    """Whether the client of an event stream has gone (its tab closed)."""
    return request.transport is None or request.transport.is_closing()


async def _send(stream: web.StreamResponse, event: str, data: Any) -> None:
    await stream.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _this_machine_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The load balancer's health checks name the task's address; they see only /healthz.
    host = request.host if request.host.endswith("]") else request.host.rsplit(":", 1)[0]
    if request.path != "/healthz" and host not in _LOOPBACK_NAMES:
        raise web.HTTPMisdirectedRequest(text="the dashboard answers localhost only\n")
    return await handler(request)


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except grpc.aio.AioRpcError as error:
        return web.json_response(_error(error), status=_HTTP_STATUS.get(error.code(), 502))


def _error(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    return {"error": error.code().name, "message": error.details()}


async def start_dashboard(
    job_api: str,
    host: str,
    port: int,
    health: Callable[[], tuple[bool, str]],
    *,
    pages: bool = True,
) -> tuple[web.AppRunner, int]:
    """Serve the dashboard on host:port (0: any free port), reading the Job API at `job_api`
    (or, without `pages`, its /healthz alone); /healthz answers as `health()` says (200 when
    healthy, else 503, with its reason). Returns the runner (to clean up) and the port."""
    channel = grpc.aio.insecure_channel(job_api)
    runner = web.AppRunner(Dashboard(channel, health).app(pages=pages), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=1.0)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    logger.info("dashboard on http://%s:%d", host, bound)
    return runner, int(bound)
