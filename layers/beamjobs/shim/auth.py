"""Authentication of every RPC: who calls, before any servicer runs.

Each call must carry an identity proof (beamjobs.aws.signed_identity) that verifies, of a principal
the deployment allows; else it ends UNAUTHENTICATED or PERMISSION_DENIED before its servicer
is reached and before its request is read: only callers who proved who they are may send
large messages. New proofs are verified at a bounded rate per client address, refused
RESOURCE_EXHAUSTED beyond it without asking STS. Only health checks are open (load balancers
and orchestrators ask them with no identity). A shim that authenticates no one serves everyone
as the local caller.

Servicers read whom they serve with `current_caller()`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from beamjobs.aws.signed_identity import METADATA_KEY, Verifier
from beamjobs.domain.errors import BeamjobsError, ResourceExhausted, Unauthenticated
from beamjobs.domain.identity import LOCAL_CALLER, AccessPolicy, Caller
from beamjobs.shim.handler_shapes import checked_first, client_address

# Identity checks, each of which may wait on STS, run on threads of their own: a flood of new
# proofs waits here, never in front of Prepare, Run or the change feed's reads.
VERIFY_THREADS = 4
OPEN_SERVICES = frozenset({health_pb2.DESCRIPTOR.services_by_name["Health"].full_name})
_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller")


def current_caller() -> Caller:
    """The caller of the RPC being served (set by the Authenticator for each call)."""
    return _caller.get()


class NewProofRate:
    """How often each client address may present a proof not verified before (each one may
    cost a call to STS): BURST at once, then PER_SECOND. Addresses are remembered for the
    ADDRESSES most recent; one forgotten starts full again. Only the event loop's thread
    touches it."""

    BURST = 50
    PER_SECOND = 10.0
    ADDRESSES = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # address → (tokens, when counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, address: str) -> None:
        now = self._clock()
        tokens, counted = self._buckets.pop(address, (float(self.BURST), now))
        tokens = min(float(self.BURST), tokens + (now - counted) * self.PER_SECOND)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            raise ResourceExhausted(
                f"too many new identity proofs from {address}: at most {self.PER_SECOND:g} a "
                "second (a client signs a new one every few minutes)"
            )
        self._buckets[address] = (tokens - 1.0, now)
        while len(self._buckets) > self.ADDRESSES:
            self._buckets.popitem(last=False)


class Authenticator(grpc.aio.ServerInterceptor):
    """Verifies each call's proof and admits its principal by `policy`; with no verifier,
    every call is the local caller. A proof verified before is known at once; a new one is
    verified before the call's request is read, within its address's NewProofRate, on
    VERIFY_THREADS of its own (it may wait on STS)."""

    def __init__(self, verifier: Verifier | None, policy: AccessPolicy | None) -> None:
        self._verifier = verifier
        self._policy = policy
        self._pool = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="shim-identity")
        self._rate = NewProofRate()
        # Proofs being verified now: the calls that carry one meanwhile wait for that
        # verification, and are not counted as new (a client opens many streams at once).
        self._verifying: dict[str, asyncio.Future[str]] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.split("/")[1] in OPEN_SERVICES:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        if self._verifier is None or self._policy is None:
            caller = LOCAL_CALLER
        else:
            try:
                proof = _one_proof(details.invocation_metadata)
                principal = self._verifier.remembered(proof)
                if principal is None:
                    return checked_first(handler, method, functools.partial(self._admit, proof))
                caller = self._policy.caller(principal)
            except BeamjobsError as refusal:
                return checked_first(handler, method, functools.partial(_refuse, refusal))
        # The call's servicer runs in this same task, after this returns: it sees the caller.
        _caller.set(caller)
        return handler

    async def _admit(self, proof: str, context: grpc.aio.ServicerContext) -> None:
        """Verify a new proof, and serve its caller (the call's handler runs in this task)."""
        assert self._verifier is not None and self._policy is not None
        verifying = self._verifying.get(proof)
        if verifying is None:
            self._rate.take(client_address(context.peer()))
            loop = asyncio.get_running_loop()
            verifying = loop.run_in_executor(self._pool, self._verifier.verify, proof)
            self._verifying[proof] = verifying
            verifying.add_done_callback(lambda _: self._verifying.pop(proof, None))
        # Shielded: a waiting call that is cancelled does not cancel the others' verification.
        principal = await asyncio.shield(verifying)
        _caller.set(self._policy.caller(principal))


def _one_proof(metadata: Any) -> str:
    proofs = [value for key, value in metadata or () if key == METADATA_KEY]
    if len(proofs) != 1 or not isinstance(proofs[0], str):
        raise Unauthenticated(
            f"every call must carry one identity proof in {METADATA_KEY!r} metadata: "
            "submit through `beamjobs connect`, which adds it"
        )
    return proofs[0]


async def _refuse(refusal: BeamjobsError, context: grpc.aio.ServicerContext) -> None:
    raise refusal
