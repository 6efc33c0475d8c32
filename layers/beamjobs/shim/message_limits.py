"""Message sizes per method: the server accepts messages as large as a pipeline may be, and every
other method refuses, before parsing, any request message over its own limit
(beamjobs.domain.limits.message_limit) with INVALID_ARGUMENT naming the limit.

A method that takes large messages (Prepare) holds its whole request in memory before its
handler runs, so few are received at once: at most LARGE_MESSAGES_PER_CONNECTION per
connection and LARGE_MESSAGES_PER_ADDRESS per client address. Another is refused with
RESOURCE_EXHAUSTED before it is read (a client that submits one pipeline at a time never
meets the bound). Callers are authenticated before this (beamjobs.shim.auth): only they get
this far.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from beamjobs.domain.errors import InvalidArgument, ResourceExhausted
from beamjobs.domain.limits import PIPELINE_MESSAGE_MAX_BYTES, message_limit
from beamjobs.shim.handler_shapes import client_address, one_request
from beamjobs.shim.memory import trim_soon
from beamjobs.shim.status import status_for

LARGE_MESSAGES_PER_CONNECTION = 2
LARGE_MESSAGES_PER_ADDRESS = 4


@dataclass(frozen=True)
class _Oversized:
    """Stands for a unary request refused for its size (aborted by the handler's wrapper: a
    deserializer that raises would end the call UNKNOWN)."""

    error: InvalidArgument


def _problem(method: str, size: int, limit: int) -> InvalidArgument:
    trim_soon()
    return InvalidArgument(f"a {method} request message is {size} bytes; its limit is {limit}")


class _Receiving:
    """Large messages being received, by connection and by client address. Only the event
    loop's thread touches it."""

    def __init__(self) -> None:
        self._by_connection: Counter[str] = Counter()
        self._by_address: Counter[str] = Counter()

    @contextlib.contextmanager
    def slot(self, peer: str) -> Iterator[None]:
        """Held while one message from `peer` (gRPC's "ipv4:10.0.0.1:50000") is received."""
        address = client_address(peer)
        if self._by_connection[peer] >= LARGE_MESSAGES_PER_CONNECTION:
            raise ResourceExhausted(
                f"at most {LARGE_MESSAGES_PER_CONNECTION} large requests are received at once "
                "on one connection: send the next when one is answered"
            )
        if self._by_address[address] >= LARGE_MESSAGES_PER_ADDRESS:
            raise ResourceExhausted(
                f"at most {LARGE_MESSAGES_PER_ADDRESS} large requests are received at once "
                f"from one address ({address}): send the next when one is answered"
            )
        self._by_connection[peer] += 1
        self._by_address[address] += 1
        try:
            yield
        finally:
            self._by_connection -= Counter({peer: 1})  # (drops counts that reach zero)
            self._by_address -= Counter({address: 1})


class MessageLimits(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self._receiving = _Receiving()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method).rsplit("/", 1)[-1]
        limit = message_limit(method)
        if handler is None:
            return None
        if limit >= PIPELINE_MESSAGE_MAX_BYTES:  # the server's own ceiling applies
            return _received_few_at_once(handler, method, self._receiving)
        return _limited(handler, method, limit)


def _received_few_at_once(handler: Any, method: str, receiving: _Receiving) -> Any:
    """The unary `handler`, request-streaming in shape (the wire is the same) so that its one
    message is read here, within a slot of `receiving`."""

    async def unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            with receiving.slot(context.peer()):
                request = await one_request(context, method)
        except ResourceExhausted as refusal:
            await context.abort(status_for(refusal), refusal.message)
        return await handler.unary_unary(request, context)

    return grpc.stream_unary_rpc_method_handler(
        unary, handler.request_deserializer, handler.response_serializer
    )


def _limited(handler: Any, method: str, limit: int) -> Any:
    parse = handler.request_deserializer

    if handler.request_streaming:
        # Staging reads its messages in its handler, where a raised domain error gets its
        # status.
        def read(raw: bytes) -> Any:
            size = len(raw)
            if size > limit:
                # Not kept by the refusal's traceback (this frame), which lives on in a
                # reference cycle until the garbage collector's next full pass.
                del raw
                raise _problem(method, size, limit)
            return parse(raw)

        factory = (
            grpc.stream_stream_rpc_method_handler
            if handler.response_streaming
            else grpc.stream_unary_rpc_method_handler
        )
        behavior = handler.stream_stream or handler.stream_unary
        return factory(behavior, read, handler.response_serializer)

    def sized(raw: bytes) -> Any:
        return _Oversized(_problem(method, len(raw), limit)) if len(raw) > limit else parse(raw)

    if handler.response_streaming:

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, _Oversized):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error.message)
            async for response in handler.unary_stream(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(streaming, sized, handler.response_serializer)

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Oversized):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error.message)
        return await handler.unary_unary(request, context)

    return grpc.unary_unary_rpc_method_handler(unary, sized, handler.response_serializer)
