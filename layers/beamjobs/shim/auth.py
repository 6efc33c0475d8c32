"""Authentication of every RPC: who calls, before any servicer runs.

Each call must carry an identity proof (beamjobs.aws.signed_identity) that verifies, of a principal
the deployment allows; else it ends UNAUTHENTICATED or PERMISSION_DENIED before its servicer
is reached. Only health checks are open (load balancers and orchestrators ask them with no
identity). A shim that authenticates no one serves everyone as the local caller.

Servicers read whom they serve with `current_caller()`.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from beamjobs.aws.signed_identity import METADATA_KEY, Verifier
from beamjobs.domain.errors import BeamjobsError, Unauthenticated
from beamjobs.domain.identity import LOCAL_CALLER, AccessPolicy, Caller
from beamjobs.shim.status import status_for

# Identity checks, each of which may wait on STS, run on threads of their own: a flood of new
# proofs waits here, never in front of Prepare, Run or the change feed's reads.
VERIFY_THREADS = 4
OPEN_SERVICES = frozenset({health_pb2.DESCRIPTOR.services_by_name["Health"].full_name})
_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller")


def current_caller() -> Caller:
    """The caller of the RPC being served (set by the Authenticator for each call)."""
    return _caller.get()


class Authenticator(grpc.aio.ServerInterceptor):
    """Verifies each call's proof (with `verifier`, off the event loop on VERIFY_THREADS of its
    own) and admits its principal by `policy`; with no verifier, every call is the local
    caller."""

    def __init__(self, verifier: Verifier | None, policy: AccessPolicy | None) -> None:
        self._verifier = verifier
        self._policy = policy
        self._pool = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="shim-identity")

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.split("/")[1] in OPEN_SERVICES:
            return handler
        try:
            caller = await self._caller(details.invocation_metadata)
        except BeamjobsError as refusal:
            return _refusing(handler, status_for(refusal), refusal.message)
        # The call's servicer runs in this same task, after this returns: it sees the caller.
        _caller.set(caller)
        return handler

    async def _caller(self, metadata: Any) -> Caller:
        if self._verifier is None or self._policy is None:
            return LOCAL_CALLER
        proofs = [value for key, value in metadata or () if key == METADATA_KEY]
        if len(proofs) != 1 or not isinstance(proofs[0], str):
            raise Unauthenticated(
                f"every call must carry one identity proof in {METADATA_KEY!r} metadata: "
                "submit through `beamjobs connect`, which adds it"
            )
        principal = self._verifier.remembered(proofs[0])
        if principal is None:
            loop = asyncio.get_running_loop()
            principal = await loop.run_in_executor(self._pool, self._verifier.verify, proofs[0])
        return self._policy.caller(principal)


def _refusing(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    """A handler that ends its call with `code` without reading the request: request-streaming
    in shape whatever the method's is (the wire is the same), since gRPC reads a unary
    request whole before its handler runs. HTTP/2 flow control then stops the caller's message
    after a window's worth: an unproven 200 MiB Prepare costs the shim nothing."""

    async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    async def refuse_streaming(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover (abort raises): this makes the function a generator

    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_streaming, **serializers)
    return grpc.stream_unary_rpc_method_handler(refuse, **serializers)
