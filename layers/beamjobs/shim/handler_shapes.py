"""Wrapping a method's handler so that something runs before its request is read.

gRPC reads a unary request whole before its handler runs, so a check that must come first (who
calls, how many large messages are being received) needs the handler in request-streaming
shape: the wire is the same, and the one request is read with `context.read()` once the check
has passed. Until then HTTP/2 flow control holds the caller's message after a window's worth.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from beamjobs.domain.errors import BeamjobsError
from beamjobs.shim.status import status_for

# Runs before the request is read; a BeamjobsError it raises ends the call with its status.
Check = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


def client_address(peer: str) -> str:
    """The client's address in gRPC's peer string ("ipv4:10.0.0.1:50000" is "ipv4:10.0.0.1")."""
    return peer.rpartition(":")[0] or peer


async def one_request(context: grpc.aio.ServicerContext, method: str) -> Any:
    """The one request message of a unary call whose handler is request-streaming in shape."""
    request = await context.read()
    if request is grpc.aio.EOF:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"a {method} call carries one request message"
        )
    return request


def checked_first(handler: Any, method: str, check: Check) -> Any:
    """`handler` (any shape) in request-streaming shape, running `check` before any request
    message is read."""
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }

    async def passes(context: grpc.aio.ServicerContext) -> None:
        try:
            await check(context)
        except BeamjobsError as refusal:
            await context.abort(status_for(refusal), refusal.message)

    if handler.response_streaming:

        async def streaming(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await passes(context)
            if handler.request_streaming:
                responses = handler.stream_stream(requests, context)
            else:
                responses = handler.unary_stream(await one_request(context, method), context)
            if inspect.isawaitable(responses):  # a handler that writes with context.write
                await responses
                return
            async with contextlib.aclosing(responses):  # a stream's end ends the handler's
                async for response in responses:
                    yield response

        return grpc.stream_stream_rpc_method_handler(streaming, **serializers)

    async def unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await passes(context)
        if handler.request_streaming:
            return await handler.stream_unary(requests, context)
        return await handler.unary_unary(await one_request(context, method), context)

    return grpc.stream_unary_rpc_method_handler(unary, **serializers)
