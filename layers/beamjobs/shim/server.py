"""The shim's gRPC server: the Job API, Beamjobs' Jobs service, health checking and reflection
on one port."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from beamjobs.api import (
    artifact_api_pb2,
    artifact_api_pb2_grpc,
    job_api_pb2,
    job_api_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
)
from beamjobs.aws.invoker import Invoker
from beamjobs.aws.signed_identity import LOOPBACK_NAMES, Verifier, endpoint_host
from beamjobs.domain.engines import EngineChoice
from beamjobs.domain.identity import AccessPolicy
from beamjobs.domain.limits import MAX_STREAMS_PER_CONNECTION, PIPELINE_MESSAGE_MAX_BYTES, Quotas
from beamjobs.runtime import Stores
from beamjobs.shim.auth import Authenticator
from beamjobs.shim.backend import Backend
from beamjobs.shim.changefeed import ChangeFeed
from beamjobs.shim.gauges import Gauges
from beamjobs.shim.jobs_servicer import JobsServicer
from beamjobs.shim.memory import return_large_buffers_to_the_os
from beamjobs.shim.message_limits import MessageLimits
from beamjobs.shim.pools import Pools, PoolWatch
from beamjobs.shim.servicer import JobServicer, OpenStreams
from beamjobs.shim.staging import ArtifactStagingServicer

# How calls are authenticated: identity proofs verified by one, principals admitted by the other.
Authentication = tuple[Verifier, AccessPolicy]

logger = logging.getLogger(__name__)

# Pipelines of tens of megabytes must be accepted (the handlers get them by S3 reference);
# every other method has a smaller limit of its own (beamjobs.shim.message_limits).
MAX_MESSAGE_BYTES = PIPELINE_MESSAGE_MAX_BYTES
STREAM_WINDOW_BYTES = 4 * 1024 * 1024
# In-flight RPCs get this long to finish when the shim is told to stop.
SHUTDOWN_GRACE_SECONDS = 10.0

JOB_SERVICE = job_api_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
STAGING_SERVICE = artifact_api_pb2.DESCRIPTOR.services_by_name["ArtifactStagingService"].full_name
JOBS_SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["Jobs"].full_name
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::", "[::]"})


class Shim:
    """A started shim: its bound port and how to stop it."""

    def __init__(
        self,
        server: grpc.aio.Server,
        port: int,
        health_servicer: health.HealthServicer,
        staging: ArtifactStagingServicer,
        feed: ChangeFeed,
        streams: OpenStreams,
        watch: PoolWatch,
        gauges: Gauges,
    ):
        self.server = server
        self.port = port
        self._health = health_servicer
        self._staging = staging
        self.feed = feed
        self.streams = streams
        self._watch = watch
        self._gauges = gauges
        self.serving = True

    def health(self) -> tuple[bool, str]:
        """Whether a load balancer should send it calls, and why: not once it is stopping, nor
        while the threads of its streams or of staging are starved. Starved handler
        invocations (Lambda throttling them) are reported, but the shim stays in service:
        another shim would be throttled alike, and its streams are served meanwhile."""
        if not self.serving:
            return False, "stopping"
        starved = self._watch.starved()
        waits = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in sorted(starved.items()))
        if set(starved) - {"invocations"}:
            return False, f"starved: threads waited ({waits})"
        if starved:
            return True, f"ok; handler invocations wait ({waits})"
        return True, "ok"

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS, drain: float = 0.0) -> None:
        """Tell load balancers first and take no new calls (clients reconnect elsewhere, or to
        the shim that took this port over); let open streams follow their jobs to the end for
        up to `drain` seconds, then end the rest with UNAVAILABLE; let in-flight calls finish
        within `grace`. Beam's SDKs never resubscribe: a stream ended early fails the user's
        wait_until_finish."""
        self.serving = False
        await self._health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self.server.stop(drain + grace))
        await self.streams.drained(drain)
        await self.feed.close()
        await self._watch.close()
        await self._gauges.close()
        await stopping
        await self._staging.settle()


def staging_endpoint(host: str, port: int, advertised: str | None) -> str:
    """The address SDKs stage artifacts to: the advertised one (e.g. a load balancer's), else
    the bound one (localhost when bound to every interface)."""
    if advertised:
        return advertised
    return f"{'localhost' if host in _ANY_ADDRESS else host}:{port}"


def deployment_hosts(host: str, advertised: str | None) -> frozenset[str]:
    """The hosts the shim's clients dial, which their identity proofs name: the staging
    endpoint's (every loopback name for localhost)."""
    named = endpoint_host(staging_endpoint(host, 0, advertised))
    return LOOPBACK_NAMES if named in LOOPBACK_NAMES else frozenset({named})


async def start_shim(
    invoker: Invoker,
    stores: Stores,
    streams_client: Any,
    *,
    host: str,
    port: int,
    advertised_endpoint: str | None = None,
    authentication: Authentication | None = None,
    caller_key: bytes,
    quotas: Quotas | None = None,
    engines: EngineChoice | None = None,
) -> Shim:
    """Serve the Job API; with `authentication`, for the principals it admits only (without,
    every call is the local caller); each principal within `quotas` (the defaults when None);
    jobs on `engines` (the local one alone when None). The handlers it invokes get each
    call's caller signed with `caller_key`."""
    quotas = quotas or Quotas()
    engines = engines or EngineChoice.of("local", (), None, None)
    return_large_buffers_to_the_os()
    pools = Pools.start()
    backend = Backend(invoker, stores, pools, caller_key)
    verifier, policy = authentication or (None, None)
    server = grpc.aio.server(
        interceptors=[Authenticator(verifier, policy), MessageLimits()],
        options=[
            # More streams than this on one connection wait in the client.
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Keep idle streams alive through load balancers; accept clients' keepalive pings.
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # A fixed 4 MiB receive window per stream instead of one that grows with the
            # measured bandwidth-delay product: a client streaming an artifact faster than S3
            # takes it can then have at most 4 MiB waiting here (measured: the adaptive window
            # let a 200 MB artifact grow the shim by up to 100 MB). 4 MiB still fills a 50 ms
            # round trip at 80 MB/s.
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
        ],
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    feed = ChangeFeed(
        streams_client, stores.jobs, backend.blocking, max_subscribers=quotas.total_subscribers
    )
    streams = OpenStreams(quotas.streams_per_principal)
    endpoint = staging_endpoint(host, bound, advertised_endpoint)
    job_api_pb2_grpc.add_JobServiceServicer_to_server(
        JobServicer(backend, feed, endpoint, streams, quotas, engines), server
    )
    jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(backend), server)
    staging = ArtifactStagingServicer(backend, quotas, streams)
    artifact_api_pb2_grpc.add_ArtifactStagingServiceServicer_to_server(staging, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            JOB_SERVICE,
            JOBS_SERVICE,
            STAGING_SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    feed.start()
    watch = PoolWatch(pools.named())
    watch.start()
    gauges = Gauges(feed)
    gauges.start()
    await server.start()
    for service in ("", JOB_SERVICE, JOBS_SERVICE, STAGING_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    logger.info("Job API listening on %s:%d", host, bound)
    return Shim(server, bound, health_servicer, staging, feed, streams, watch, gauges)


async def serve_until_signalled(shim: Shim, drain: float) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully, draining open streams for up to
    `drain` seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("stopping: draining in-flight calls, and open streams for up to %g s", drain)
    await shim.stop(drain=drain)
