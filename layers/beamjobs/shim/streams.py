"""Following a job: its stored events from the first, then live ones from the change feed, until
the terminal state — with no gap and no duplicate.

The subscription is registered before the history is read, so an event written meanwhile is
either in the history or waiting in the subscription (or both: the duplicate is dropped by its
sequence number). A live event past the next expected number, a RESYNC from the feed, or a long
silence makes the follower catch up from the table with one Query.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from beamjobs.domain.errors import Unavailable
from beamjobs.domain.model import Event, unknown_job
from beamjobs.domain.states import is_terminal
from beamjobs.domain.store import EventPage, JobStore
from beamjobs.shim.changefeed import ChangeFeed, Closed, Subscription

Blocking = Callable[..., Awaitable[Any]]

# With no news for this long, look at the table anyway: a last defence against a record the
# feed could not know it missed. (Costs one Query per idle stream per interval.)
SILENCE_CHECK_SECONDS = 60.0


async def follow(
    store: JobStore,
    feed: ChangeFeed,
    job_id: str,
    blocking: Blocking,
    *,
    silence_check: float = SILENCE_CHECK_SECONDS,
    subscription: Subscription | None = None,
) -> AsyncGenerator[Event, None]:
    """Yield every event of the job in order, from the first, until its terminal state.
    Raises NotFound (before yielding) for an unknown job, Unavailable when the feed closes (or
    the `subscription` given, the feed's for this job, is ended by its owner)."""
    subscription = subscription or feed.subscribe(job_id)
    try:
        last_seq = 0
        catch_up = True
        while True:
            if catch_up:
                page: EventPage = await blocking(store.event_page, job_id, last_seq)
                if not page.events and last_seq == 0:
                    raise unknown_job(job_id)  # every job has its first state from the start
                for event in page.events:
                    last_seq = event.seq
                    yield event
                    if event.state is not None and is_terminal(event.state):
                        return
                # One page at a time, so a catch-up holds one page's bytes, not the history.
                catch_up = not page.complete
                if catch_up:
                    continue
            item = await subscription.next(silence_check)
            if isinstance(item, Closed):
                raise Unavailable("the Job API server is shutting down: subscribe again")
            if not isinstance(item, Event) or item.seq > last_seq + 1:
                catch_up = True  # a silence, a RESYNC, or a gap
            elif item.seq == last_seq + 1:
                last_seq = item.seq
                yield item
                if item.state is not None and is_terminal(item.state):
                    return
    finally:
        feed.unsubscribe(subscription)
