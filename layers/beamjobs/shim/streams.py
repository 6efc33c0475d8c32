"""Following a job's stored events: replay what is stored, then poll for what comes, and stop
after the terminal state. (A DynamoDB Streams change feed replaces the polling later; the
contract stays: no gap, no duplicate, sequence order.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from beamjobs.states import is_terminal
from beamjobs.store import Event, JobStore

Blocking = Callable[..., Awaitable[Any]]

# At most one Query per job and subscriber in this interval while waiting for news.
POLL_INTERVAL_SECONDS = 0.1


async def follow(
    store: JobStore,
    job_id: str,
    blocking: Blocking,
    *,
    poll_interval: float = POLL_INTERVAL_SECONDS,
) -> AsyncIterator[Event]:
    """Yield every event of the job in order, from the first, until its terminal state.
    Raises NotFound (before yielding) for an unknown job."""
    await blocking(store.get, job_id)
    last_seq = 0
    while True:
        events: list[Event] = await blocking(store.events, job_id, after_seq=last_seq)
        for event in events:
            last_seq = event.seq
            yield event
            if event.state is not None and is_terminal(event.state):
                return
        if not events:
            await asyncio.sleep(poll_interval)
