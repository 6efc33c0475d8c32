"""What every servicer of the shim shares: the way to the handlers, the stores, the thread
pools for blocking calls (beamjobs.shim.pools), and the one translation of failures into gRPC
status."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc

from beamjobs.aws.invoker import Invoker, event_for
from beamjobs.domain.errors import BeamjobsError, error_from_code
from beamjobs.runtime import Stores
from beamjobs.shim.auth import current_caller
from beamjobs.shim.pools import Pools
from beamjobs.shim.status import status_for

logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


class Backend:
    def __init__(self, invoker: Invoker, stores: Stores, pools: Pools, caller_key: bytes) -> None:
        self.invoker = invoker
        self._caller_key = caller_key
        self.stores = stores
        self.pools = pools

    async def blocking(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking read (DynamoDB, S3, the change feed) off the event loop."""
        return await _run_in(self.pools.reads, function, *args, **kwargs)

    async def staging(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking call of artifact staging (S3 uploads) off the event loop."""
        return await _run_in(self.pools.staging, function, *args, **kwargs)

    async def call(self, rpc: str, request: dict[str, Any]) -> dict[str, Any]:
        """Invoke the handler of `rpc` for the caller of the RPC being served; its error
        answer is raised as the domain error."""
        function, event = event_for(rpc, current_caller(), request, self._caller_key)
        answer = await _run_in(self.pools.invocations, self.invoker.invoke, function, event)
        if "error" in answer:
            raise error_from_code(answer["error"]["code"], answer["error"]["message"])
        return dict(answer["result"])


async def _run_in(pool: Executor, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool, functools.partial(function, *args, **kwargs))


def guarded(method: F) -> F:
    """Turn a domain error into its status, and anything unexpected into INTERNAL (logged),
    so no RPC ever ends with UNKNOWN."""

    async def abort(error: Exception, context: grpc.aio.ServicerContext) -> None:
        if isinstance(error, grpc.aio.AbortError):
            raise error
        if isinstance(error, BeamjobsError):
            await context.abort(status_for(error), error.message)
        logger.error("%s failed", method.__name__, exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except Exception as error:  # the edge: every failure gets its status, never UNKNOWN
            await abort(error, context)

    @functools.wraps(method)
    async def streaming(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for item in method(self, request, context):
                yield item
        except Exception as error:  # the edge: every failure gets its status, never UNKNOWN
            await abort(error, context)

    wrapper = streaming if inspect.isasyncgenfunction(method) else unary
    return wrapper  # type: ignore[return-value]
