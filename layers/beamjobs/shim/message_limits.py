"""Message sizes per method: the server accepts messages as large as a pipeline may be, and every
other method refuses, before parsing, any request message over its own limit
(beamjobs.domain.limits.message_limit) with INVALID_ARGUMENT naming the limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from beamjobs.domain.errors import InvalidArgument
from beamjobs.domain.limits import PIPELINE_MESSAGE_MAX_BYTES, message_limit
from beamjobs.shim.memory import trim_soon


@dataclass(frozen=True)
class _Oversized:
    """Stands for a unary request refused for its size (aborted by the handler's wrapper: a
    deserializer that raises would end the call UNKNOWN)."""

    error: InvalidArgument


def _problem(method: str, size: int, limit: int) -> InvalidArgument:
    trim_soon()
    return InvalidArgument(f"a {method} request message is {size} bytes; its limit is {limit}")


class MessageLimits(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method).rsplit("/", 1)[-1]
        limit = message_limit(method)
        if handler is None or limit >= PIPELINE_MESSAGE_MAX_BYTES:
            return handler  # the server's own ceiling applies
        return _limited(handler, method, limit)


def _limited(handler: Any, method: str, limit: int) -> Any:
    parse = handler.request_deserializer

    if handler.request_streaming:
        # Staging reads its messages in its handler, where a raised domain error gets its
        # status.
        def read(raw: bytes) -> Any:
            if len(raw) > limit:
                raise _problem(method, len(raw), limit)
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
