"""The change feed: one reader per shim process tails the jobs table's DynamoDB Stream and hands
each stored job event to the subscribers of its job.

Records are hints, not the truth. Every event carries its job's sequence number, and a
subscriber that sees a gap, or is told that the feed may have missed records, catches up from
the table with one Query (beamjobs.shim.streams). So nothing the feed can suffer (an expired
iterator, a trimmed shard, a stream briefly unavailable, a subscriber too slow to keep up)
costs more than a Query; no message is ever lost.

Shards are followed as DynamoDB Streams defines them: every shard of the stream, a child only
after its parent is exhausted, shards open at start-up from LATEST (the table holds what came
before), shards found later from TRIM_HORIZON. GetRecords runs about every 0.2 s per shard while
records flow (DynamoDB Streams allows about five per second; the time a call takes counts
towards it) and backs off to 0.5 s when idle. Whoever knows that the table was just written can
`wake` the reader to read at once (AWS itself has no such signal).

The embedded AWS rings a doorbell (a pipe) after every item put, before it answers the put. So
once the reader has answered every ring with a round that read every shard to its end, it has
seen every write any caller saw acknowledged: the feed is `current`, as fresh as a read, and
the jobs it follows (`followed`) answer GetState without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import logging
import os
import struct
import termios
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from beamjobs.aws import malformed_items
from beamjobs.aws.dynamodb_store import DynamoJobStore, event_from_stream_image
from beamjobs.aws.errors import error_code
from beamjobs.domain.errors import BeamjobsError, MalformedItem, ResourceExhausted
from beamjobs.domain.limits import Quotas
from beamjobs.domain.model import Event, event_bytes
from beamjobs.shim.followed_jobs import FollowedJobs

logger = logging.getLogger(__name__)
Blocking = Callable[..., Awaitable[Any]]

BUSY_INTERVAL_SECONDS = 0.2
MAX_IDLE_INTERVAL_SECONDS = 0.5
# Woken, the reader still leaves this long between the starts of rounds.
WOKEN_INTERVAL_SECONDS = 0.01
# Shards are listed again this often (and at once when one closes), to find new ones.
DESCRIBE_INTERVAL_SECONDS = 10.0
# Records asked for per GetRecords (DynamoDB Streams' maximum): a fuller page left some unread.
RECORDS_PER_READ = 1000
# Bytes of events waiting for one subscriber (their messages' UTF-8 text, and a little for
# each event); beyond this it is told to catch up from the table.
SUBSCRIBER_CAPACITY_BYTES = 4 * 1024 * 1024
MAX_SUBSCRIBERS = Quotas().total_subscribers
_EVENT_OVERHEAD_BYTES = 100


class Resync:
    """Told to subscribers: records may have been missed; catch up from the table."""


class Closed:
    """Told to subscribers: the feed stopped (the shim is shutting down)."""


RESYNC = Resync()
CLOSED = Closed()
Item = Event | Resync | Closed


def _size(item: Item) -> int:
    return _EVENT_OVERHEAD_BYTES + (event_bytes(item) if isinstance(item, Event) else 0)


class Subscription:
    """One subscriber's queue of events of one job, bounded in bytes. Only the event loop's
    thread touches it. A full queue is emptied and replaced by RESYNC: the subscriber catches
    up from the table (a page at a time), and the reader never waits for it."""

    def __init__(self, job_id: str, capacity_bytes: int) -> None:
        self.job_id = job_id
        self._capacity = capacity_bytes
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._bytes = 0

    def offer(self, item: Item) -> None:
        size = _size(item)
        if self._bytes + size > self._capacity:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._bytes = 0
            item = CLOSED if isinstance(item, Closed) else RESYNC
            size = _size(item)
        self._bytes += size
        self._queue.put_nowait(item)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    async def next(self, timeout: float) -> Item | None:
        """The next item, or None when none came within `timeout` seconds."""
        try:
            # Not wait_for: on Python 3.11 it returns an item that arrives in the same loop
            # iteration as a cancellation and drops the cancellation, leaving a cancelled
            # stream following its job until the next silence check.
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            return None
        self._bytes -= _size(item)
        return item


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    iterator: str | None = None
    # The sequence number of the last record read (to resume after an expired iterator).
    last_sequence: str | None = None
    exhausted: bool = False


class ChangeFeed:
    def __init__(
        self,
        streams: Any,
        store: DynamoJobStore,
        blocking: Blocking,
        *,
        capacity_bytes: int = SUBSCRIBER_CAPACITY_BYTES,
        max_subscribers: int = MAX_SUBSCRIBERS,
        busy_interval: float = BUSY_INTERVAL_SECONDS,
        max_idle_interval: float = MAX_IDLE_INTERVAL_SECONDS,
        describe_interval: float = DESCRIBE_INTERVAL_SECONDS,
    ) -> None:
        self._streams = streams
        self._store = store
        self._blocking = blocking
        self._capacity = capacity_bytes
        self._max_subscribers = max_subscribers
        self._busy = busy_interval
        self._max_idle = max_idle_interval
        self._describe_interval = describe_interval
        self._subscribers: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: asyncio.Event | None = None
        self._closed = False
        self.followed = FollowedJobs()
        # The doorbell, when there is one: rings read, and the rings that rounds read after.
        self._doorbell: int | None = None
        self._rings = 0
        self._rings_read_after = -1
        self._positioned = False
        # The age (seconds) of the newest record of each read, the worst since take_lag.
        self._lag = 0.0

    # -- subscribers ----------------------------------------------------------------------------

    def subscribe(self, job_id: str) -> Subscription:
        if self.subscriber_count >= self._max_subscribers:
            raise ResourceExhausted(
                f"this Job API server follows at most {self._max_subscribers} streams at once "
                "(its subscriber limit); try again later"
            )
        subscription = Subscription(job_id, self._capacity)
        if self._closed:
            subscription.offer(CLOSED)
        self._subscribers.setdefault(job_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.job_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.job_id]

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    def take_lag(self) -> float:
        """How far behind the reads were since the last call (seconds), and start again."""
        lag, self._lag = self._lag, 0.0
        return lag

    def _broadcast(self, item: Item) -> None:
        self.followed.forget_all()  # records may have been missed, or none will come
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.offer(item)

    def _dispatch(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            image = record.get("dynamodb", {}).get("NewImage")
            try:
                decoded = event_from_stream_image(image) if image else None
            except MalformedItem as error:  # skipped: its job's followers see a gap, and
                malformed_items.skipped("the change feed", _keys(record), error)  # catch up
                self.followed.forget_all()
                continue
            if decoded is None:
                continue  # a job record's projection or heartbeat, an idempotency item
            job_id, event = decoded
            if self.followed.get(job_id) is not None:
                self.followed.saw(job_id, image)
            for subscription in self._subscribers.get(job_id, ()):
                subscription.offer(event)

    # -- the reader -----------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._woken = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="change-feed")

    def listen_to_doorbell(self, doorbell: int) -> None:
        """Read the stream whenever `doorbell` (a pipe's reading end) rings, and keep count, so
        that the feed knows when it is current. Call on the event loop, after `start`."""
        assert self._loop is not None, "start() first"
        os.set_blocking(doorbell, False)
        self._doorbell = doorbell
        self._loop.add_reader(doorbell, self._rung)

    def _rung(self) -> None:
        assert self._doorbell is not None
        with contextlib.suppress(BlockingIOError):
            os.read(self._doorbell, 65536)  # the rings coalesce
        self._rings += 1
        self.wake()

    @property
    def current(self) -> bool:
        """Whether the followed jobs are as fresh as a read: a round read every shard to its end
        after the last ring, and no ring is waiting. Never without a doorbell."""
        if self._doorbell is None or not self._positioned or self._rings_read_after != self._rings:
            return False
        waiting = fcntl.ioctl(self._doorbell, termios.FIONREAD, struct.pack("i", 0))
        return struct.unpack("i", waiting)[0] == 0

    def wake(self) -> None:
        """The table was just written: read the stream now rather than at the next poll, if
        anyone is waiting for events or jobs are followed. Callable from any thread; wakes
        coalesce into one round."""
        wanted = self._subscribers or len(self.followed)
        if wanted and self._loop is not None and self._woken is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
                self._loop.call_soon_threadsafe(self._woken.set)

    async def _pause(self, round_started: float, interval: float) -> None:
        """Wait until `interval` after the round started; woken, until the (shorter) woken
        interval after it."""
        assert self._woken is not None
        remaining = interval - (time.monotonic() - round_started)
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # cancellable, unlike 3.11's wait_for
                    await self._woken.wait()
        self._woken.clear()
        await asyncio.sleep(max(0.0, WOKEN_INTERVAL_SECONDS - (time.monotonic() - round_started)))

    async def close(self) -> None:
        """Stop reading; every open subscription ends (its stream answers UNAVAILABLE)."""
        self._closed = True
        self._positioned = False
        if self._doorbell is not None and self._loop is not None:
            self._loop.remove_reader(self._doorbell)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._broadcast(CLOSED)

    async def _run(self) -> None:
        backoff = self._busy
        first = True
        while True:
            try:
                await self._follow_stream(start_at_latest=first)
            except Exception as error:  # the feed must outlive whatever it meets
                self._positioned = False
                # Unavailable or gone (or a fault of the reader's own, logged in full):
                # subscribers poll the table meanwhile, by resyncing.
                expected = isinstance(error, (BeamjobsError, ClientError, BotoCoreError, OSError))
                logger.log(
                    logging.WARNING if expected else logging.ERROR,
                    "change feed interrupted (%s); retrying in %.1f s",
                    error,
                    backoff,
                    exc_info=not expected,
                )
                self._broadcast(RESYNC)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = self._busy
            first = False

    async def _follow_stream(self, *, start_at_latest: bool) -> None:
        """Read the table's current stream until it disappears (then return, to find the next
        one). Shards open now start at LATEST only on the reader's first pass."""
        stream_arn = await self._blocking(self._store.stream_arn)
        shards: dict[str, _Shard] = {}
        await self._discover(stream_arn, shards, initial=start_at_latest)
        # Positioned now: what was written before is in the table, what comes after is in the
        # stream. Subscribers catch up from the table, so whatever fell between an interruption
        # (or the stream's replacement) and this point is not missed.
        self._broadcast(RESYNC)
        self._positioned = True
        interval = self._busy
        next_describe = time.monotonic() + self._describe_interval
        while True:
            round_started, rings = time.monotonic(), self._rings
            got_any, to_the_end = False, True
            for shard in list(shards.values()):
                if shard.exhausted or shard.iterator is None:
                    continue
                parent = shards.get(shard.parent_id) if shard.parent_id else None
                if parent is not None and not parent.exhausted:
                    continue  # a child is read only after its parent
                read = await self._read(stream_arn, shard)
                got_any |= bool(read)
                to_the_end &= read is not None and read < RECORDS_PER_READ
                if shard.exhausted:
                    next_describe = 0.0  # its children appear in the next listing
                    to_the_end = False  # ... and are read from the next round on
            if to_the_end:
                self._rings_read_after = rings
            if time.monotonic() >= next_describe:
                await self._discover(stream_arn, shards, initial=False)
                next_describe = time.monotonic() + self._describe_interval
                if all(shard.exhausted for shard in shards.values()):
                    self._positioned = False
                    return  # the stream ended (disabled, or replaced): find the current one
            interval = self._busy if got_any else min(interval * 1.5, self._max_idle)
            # The interval is between the starts of rounds: a slow GetRecords is not followed
            # by a full pause as well.
            await self._pause(round_started, interval)

    async def _discover(self, stream_arn: str, shards: dict[str, _Shard], *, initial: bool) -> None:
        request: dict[str, Any] = {"StreamArn": stream_arn}
        while True:
            described = await self._blocking(self._streams.describe_stream, **request)
            description = described["StreamDescription"]
            for found in description.get("Shards", []):
                shard_id = found["ShardId"]
                if shard_id in shards:
                    continue
                shard = _Shard(shard_id, found.get("ParentShardId"))
                shards[shard_id] = shard
                closed = "EndingSequenceNumber" in found.get("SequenceNumberRange", {})
                if initial and closed:
                    shard.exhausted = True  # history: the table has it
                else:
                    position = "LATEST" if initial else "TRIM_HORIZON"
                    shard.iterator = await self._iterator(stream_arn, shard_id, position)
            last = description.get("LastEvaluatedShardId")
            if not last:
                return
            request["ExclusiveStartShardId"] = last

    async def _iterator(
        self, stream_arn: str, shard_id: str, position: str, after: str | None = None
    ) -> str:
        request = {"StreamArn": stream_arn, "ShardId": shard_id, "ShardIteratorType": position}
        if after is not None:
            request["SequenceNumber"] = after
        answer = await self._blocking(self._streams.get_shard_iterator, **request)
        return str(answer["ShardIterator"])

    async def _read(self, stream_arn: str, shard: _Shard) -> int | None:
        """One GetRecords on the shard; returns how many records it brought (None: it could
        not read)."""
        try:
            page = await self._blocking(
                self._streams.get_records, ShardIterator=shard.iterator, Limit=RECORDS_PER_READ
            )
        except ClientError as error:
            code = error_code(error)
            if code == "ExpiredIteratorException":
                # Resume after the last record read; with none read, what came is unknown.
                position = "AFTER_SEQUENCE_NUMBER" if shard.last_sequence else "LATEST"
                shard.iterator = await self._iterator(
                    stream_arn, shard.shard_id, position, shard.last_sequence
                )
                if shard.last_sequence is None:
                    self._broadcast(RESYNC)
                return None
            if code == "TrimmedDataAccessException":
                shard.iterator = await self._iterator(stream_arn, shard.shard_id, "TRIM_HORIZON")
                self._broadcast(RESYNC)
                return None
            if code in ("LimitExceededException", "ThrottlingException"):
                return None  # the next round comes after the idle interval
            raise
        records = page.get("Records", [])
        if records:
            shard.last_sequence = records[-1]["dynamodb"]["SequenceNumber"]
            self._note_lag(records[-1]["dynamodb"].get("ApproximateCreationDateTime"))
            self._dispatch(records)
        shard.iterator = page.get("NextShardIterator")
        if shard.iterator is None:
            shard.exhausted = True
        return len(records)

    def _note_lag(self, created: Any) -> None:
        """botocore answers the record's creation as a datetime (to the second, or finer)."""
        if isinstance(created, datetime.datetime):
            self._lag = max(self._lag, time.time() - created.timestamp())


def _keys(record: dict[str, Any]) -> Any:
    return record.get("dynamodb", {}).get("Keys", record.get("eventID"))
