"""`beamjobs connect`: a local proxy through which unmodified Beam SDKs reach an authenticated
Job API (the pattern of the Cloud SQL Auth Proxy).

Beam's SDKs open a plaintext channel to --job_endpoint and can add neither TLS nor metadata.
The proxy listens on localhost in plaintext and forwards every call, unary or streaming, of any
service, to the shim over TLS, adding a proof of the user's AWS identity (from the default
credential chain) to each. Bytes pass through unparsed, except Prepare's answer: the staging
endpoint it names is the proxy itself, so that staging goes through it too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import boto3
import grpc

from beamjobs.api import job_api_pb2
from beamjobs.aws.signed_identity import (
    LOOPBACK_NAMES,
    METADATA_KEY,
    SIGNATURE_LIFETIME_SECONDS,
    endpoint_host,
    sign,
    sts_url,
)

logger = logging.getLogger(__name__)

PREPARE = "/" + job_api_pb2.DESCRIPTOR.services_by_name["JobService"].full_name + "/Prepare"
# As large as the shim's: pipelines of tens of megabytes pass through.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# A proof is signed afresh well before the shim would refuse it as too old.
_RESIGN_AFTER_SECONDS = SIGNATURE_LIFETIME_SECONDS / 3
# Addresses only this machine reaches. Whoever reaches the proxy acts as the user: it listens
# on one of these only.
LOOPBACK_HOSTS = LOOPBACK_NAMES | {"[::1]"}


class Identity:
    """Proofs of the default credential chain's identity for the Job API at `endpoint` (they
    are good there only), re-signed every few minutes (the chain refreshes credentials that
    expire, such as a role session's)."""

    def __init__(self, endpoint: str, session: boto3.session.Session | None = None) -> None:
        self._deployment = endpoint_host(endpoint)
        self._session = session or boto3.session.Session()
        sts = self._session.client("sts")
        self._region = sts.meta.region_name
        self._url = sts_url(self._region, sts.meta.endpoint_url)
        self._proof: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def who(self) -> str:
        """The identity's ARN, as STS answers it (which also checks the credentials)."""
        return str(self._session.client("sts").get_caller_identity()["Arn"])

    def proof(self) -> str:
        with self._lock:
            now = time.monotonic()
            if self._proof is None or now - self._proof[1] > _RESIGN_AFTER_SECONDS:
                credentials = self._session.get_credentials()
                if credentials is None:
                    raise RuntimeError(
                        "no AWS credentials found (environment, profile, SSO or instance role)"
                    )
                proof = sign(
                    credentials.get_frozen_credentials(),
                    region=self._region,
                    url=self._url,
                    deployment=self._deployment,
                )
                self._proof = (proof, now)
            return self._proof[0]


def _raw(data: bytes) -> bytes:
    return data


class Forwarder(grpc.GenericRpcHandler):
    """Every method of every service, forwarded to `upstream` with the identity's proof."""

    def __init__(self, upstream: grpc.aio.Channel, identity: Identity, staging_endpoint: str):
        self._upstream = upstream
        self._identity = identity
        self._staging_endpoint = staging_endpoint

    def service(self, details: Any) -> grpc.RpcMethodHandler:
        method = details.method

        async def forward(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            metadata = [
                (key, value)
                for key, value in context.invocation_metadata() or ()
                if key != METADATA_KEY
            ]
            try:
                proof = await asyncio.to_thread(self._identity.proof)
            except Exception as error:  # no credentials, or signing failed: the caller's to fix
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"beamjobs connect: {error}")
            call = self._upstream.stream_stream(
                method, request_serializer=_raw, response_deserializer=_raw
            )(
                requests,
                metadata=[*metadata, (METADATA_KEY, proof)],
                timeout=context.time_remaining(),
            )
            try:
                headers = await call.initial_metadata()
                if headers:
                    await context.send_initial_metadata(tuple(headers))
                async for response in call:
                    yield self._rewritten(method, response)
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")
            finally:
                call.cancel()

        return grpc.stream_stream_rpc_method_handler(
            forward, request_deserializer=_raw, response_serializer=_raw
        )

    def _rewritten(self, method: str, response: bytes) -> bytes:
        if method != PREPARE:
            return response
        prepared = job_api_pb2.PrepareJobResponse.FromString(response)
        prepared.artifact_staging_endpoint.url = self._staging_endpoint
        return prepared.SerializeToString()


def _channel(endpoint: str, plaintext: bool) -> grpc.aio.Channel:
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 60_000),
    ]
    if plaintext:
        return grpc.aio.insecure_channel(endpoint, options=options)
    return grpc.aio.secure_channel(endpoint, grpc.ssl_channel_credentials(), options=options)


async def start_proxy(
    endpoint: str, listen: str, *, plaintext: bool = False, identity: Identity | None = None
) -> tuple[grpc.aio.Server, str]:
    """Start the proxy; answer it and the address it listens on (a port of 0 picks one)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    host = listen.rpartition(":")[0] or "127.0.0.1"
    if host not in LOOPBACK_HOSTS:
        raise ValueError(
            f"the proxy listens on this machine only (127.0.0.1 or ::1), not {host}: "
            "whoever reaches it acts with your AWS identity"
        )
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"could not listen on {listen}")
    address = f"{host}:{port}"
    server.add_generic_rpc_handlers(
        (Forwarder(_channel(endpoint, plaintext), identity or Identity(endpoint), address),)
    )
    await server.start()
    return server, address
