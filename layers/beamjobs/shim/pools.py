"""The shim's threads for blocking calls: one pool per kind of work, so that work held up in
one cannot starve another. Handler invocations wait through Lambda's throttling (the invoker
backs off and calls again), and a burst of them fills their pool; the change feed and the
streams' reads, and artifact staging (S3 uploads), keep threads of their own meanwhile.

A watch tells when a pool is starved: a probe submitted to it has waited to run longer than
STARVED_SECONDS. /healthz reports it (beamjobs.dashboard.server)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

# Threads per pool: as many for invocations and for reads as the one pool had before them
# (each unary RPC holds an invocation thread while its handler runs; a stream holds a read
# thread only while it reads a page, but hundreds open at once).
INVOCATION_THREADS = 32
READ_THREADS = 32
STAGING_THREADS = 16
# A pool whose probe waited this long to run is starved; probes are sent this often.
STARVED_SECONDS = 5.0
PROBE_SECONDS = 1.0


@dataclass(frozen=True)
class Pools:
    """`invocations`: the handlers' calls; `reads`: the change feed, streams and the shim's
    own reads of jobs and blobs; `staging`: artifact uploads."""

    invocations: ThreadPoolExecutor
    reads: ThreadPoolExecutor
    staging: ThreadPoolExecutor

    @classmethod
    def start(cls) -> Pools:
        # (Thread names start with "shim-": the shim's threads, as its role's tests know them.)
        return cls(
            ThreadPoolExecutor(INVOCATION_THREADS, thread_name_prefix="shim-invoke"),
            ThreadPoolExecutor(READ_THREADS, thread_name_prefix="shim-read"),
            ThreadPoolExecutor(STAGING_THREADS, thread_name_prefix="shim-staging"),
        )

    def named(self) -> dict[str, ThreadPoolExecutor]:
        return {"invocations": self.invocations, "reads": self.reads, "staging": self.staging}


class PoolWatch:
    """Probes each pool every PROBE_SECONDS (a no-op call, one at a time per pool) on the
    event loop; a pool is starved while its probe has waited longer than STARVED_SECONDS."""

    def __init__(
        self, pools: dict[str, ThreadPoolExecutor], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._pools = pools
        self._clock = clock
        # A pool's probe waiting to run, and when it was sent.
        self._probes: dict[str, tuple[Future[None], float]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._probe_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def starved(self) -> dict[str, float]:
        """Each starved pool, and how long its probe has waited."""
        now = self._clock()
        return {
            name: now - sent
            for name, (probe, sent) in self._probes.items()
            if not probe.done() and now - sent > STARVED_SECONDS
        }

    async def _probe_forever(self) -> None:
        while True:
            for name, pool in self._pools.items():
                probe = self._probes.get(name)
                if probe is None or probe[0].done():
                    self._probes[name] = (pool.submit(lambda: None), self._clock())
            await asyncio.sleep(PROBE_SECONDS)
