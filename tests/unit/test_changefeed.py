"""The change feed and the follow protocol against a scripted DynamoDB Streams client and an
in-memory event log: what moto cannot produce (several shards, shard rollover, expired
iterators, trimmed data, an unavailable stream) and a stalled subscriber."""

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from beamjobs.domain.errors import ResourceExhausted, Unavailable
from beamjobs.domain.model import Event, Job, Message
from beamjobs.domain.states import JobState
from beamjobs.domain.store import EventPage
from beamjobs.shim.changefeed import RESYNC, ChangeFeed
from beamjobs.shim.followed_jobs import FollowedJobs
from beamjobs.shim.streams import follow

_serialize = TypeSerializer().serialize
FAST = {"busy_interval": 0.001, "max_idle_interval": 0.005, "describe_interval": 0.01}


def _image(job_id: str, event: Event) -> dict[str, Any]:
    values: dict[str, Any] = {"pk": f"job#{job_id}", "sk": f"ev#{event.seq:012d}", "seq": event.seq}
    values["time"] = 1
    # The job's snapshot after the event, as every event item holds it.
    values["job_state"] = (event.state or JobState.RUNNING).value
    values["job_state_time"] = event.seq
    values["job_pipeline_ref"] = "pipelines/p"
    if event.state is not None:
        values["state"] = event.state.value
    if event.messages:
        values["messages"] = [
            {"importance": m.importance, "text": m.text, "time": 1} for m in event.messages
        ]
    return {k: _serialize(v) for k, v in values.items()}


class Log:
    """The table's side: each job's stored events (what follow() catches up from)."""

    def __init__(self) -> None:
        self.events: dict[str, list[Event]] = {}
        self.queries = 0

    def append(self, job_id: str, state: JobState | None = None, text: str | None = None) -> Event:
        events = self.events.setdefault(job_id, [])
        messages = (Message("JOB_MESSAGE_BASIC", text, 1.0),) if text else ()
        event = Event(seq=len(events) + 1, time=1.0, state=state, messages=messages)
        events.append(event)
        return event

    # The JobStore methods the feed and follow() use.
    def stream_arn(self) -> str:
        return "arn:stream"

    def events_after(self, job_id: str, after_seq: int = 0, limit: int = 500) -> list[Event]:
        self.queries += 1
        return [e for e in self.events[job_id] if e.seq > after_seq][:limit]


class FakeStore:
    def __init__(self, log: Log) -> None:
        self._log = log
        self.stream_arn = log.stream_arn

    def event_page(self, job_id: str, after_seq: int, limit: int = 500) -> EventPage:
        events = self._log.events_after(job_id, after_seq, limit)
        return EventPage(events, complete=len(events) < limit)


class Shard:
    def __init__(self, shard_id: str, parent: str | None = None) -> None:
        self.shard_id = shard_id
        self.parent = parent
        self.records: list[dict[str, Any]] = []
        self.closed = False


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "GetRecords")


class FakeStreams:
    """A DynamoDB Streams client over scripted shards. Iterators are "<shard>:<position>";
    `failures` maps a call name to error codes to raise, one per call, first."""

    def __init__(self) -> None:
        self.shards: list[Shard] = []
        self.failures: dict[str, list[str]] = {}
        self.iterator_requests: list[tuple[str, str]] = []
        self._sequence = 0

    def add_shard(self, shard_id: str, parent: str | None = None) -> Shard:
        shard = Shard(shard_id, parent)
        self.shards.append(shard)
        return shard

    def put(self, shard: Shard, job_id: str, event: Event) -> None:
        self._sequence += 1
        shard.records.append(
            {
                "eventName": "INSERT",
                "dynamodb": {
                    "SequenceNumber": f"{self._sequence:021d}",
                    "NewImage": _image(job_id, event),
                },
            }
        )

    def _fail(self, call: str) -> None:
        if self.failures.get(call):
            raise _error(self.failures[call].pop(0))

    def describe_stream(self, StreamArn: str, **_: Any) -> dict[str, Any]:
        self._fail("describe_stream")
        shards = []
        for shard in self.shards:
            numbers: dict[str, str] = {"StartingSequenceNumber": "0"}
            if shard.closed:
                numbers["EndingSequenceNumber"] = "9" * 21
            entry: dict[str, Any] = {"ShardId": shard.shard_id, "SequenceNumberRange": numbers}
            if shard.parent:
                entry["ParentShardId"] = shard.parent
            shards.append(entry)
        return {"StreamDescription": {"Shards": shards}}

    def get_shard_iterator(
        self, StreamArn: str, ShardId: str, ShardIteratorType: str, SequenceNumber: str = ""
    ) -> dict[str, Any]:
        self.iterator_requests.append((ShardId, ShardIteratorType))
        shard = next(s for s in self.shards if s.shard_id == ShardId)
        position = {
            "TRIM_HORIZON": 0,
            "LATEST": len(shard.records),
            "AFTER_SEQUENCE_NUMBER": next(
                (
                    i + 1
                    for i, r in enumerate(shard.records)
                    if r["dynamodb"]["SequenceNumber"] == SequenceNumber
                ),
                0,
            ),
        }[ShardIteratorType]
        return {"ShardIterator": f"{ShardId}:{position}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self._fail("get_records")
        shard_id, position = ShardIterator.rsplit(":", 1)
        shard = next(s for s in self.shards if s.shard_id == shard_id)
        records = shard.records[int(position) : int(position) + Limit]
        end = int(position) + len(records)
        page: dict[str, Any] = {"Records": records}
        if not (shard.closed and end == len(shard.records)):
            page["NextShardIterator"] = f"{shard_id}:{end}"
        return page


async def _blocking(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


async def _collect(feed: ChangeFeed, log: Log, job_id: str) -> list[int]:
    return [e.seq async for e in follow(FakeStore(log), feed, job_id, _blocking, silence_check=5)]


async def _until(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)


def _run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


def _feed(streams: FakeStreams, log: Log, **options: Any) -> ChangeFeed:
    return ChangeFeed(streams, FakeStore(log), _blocking, **{**FAST, **options})


async def _following(streams: FakeStreams, log: Log, subscribers: int = 1, **options: Any):
    """A started feed and a follower of job "j" (prepared: STOPPED), once `subscribers` are
    registered and the reader holds its iterators."""
    feed = _feed(streams, log, **options)
    feed.start()
    log.append("j")
    follower = asyncio.create_task(_collect(feed, log, "j"))
    await _until(lambda: feed.subscriber_count == subscribers)
    await asyncio.sleep(0.02)
    return feed, follower


def test_children_are_read_after_their_parent_and_every_record_arrives_once_in_order():
    async def scenario():
        log, streams = Log(), FakeStreams()
        parent = streams.add_shard("shard-1")
        feed, follower = await _following(streams, log)
        for _ in range(3):
            streams.put(parent, "j", log.append("j", text="in the parent"))
        # The parent closes and splits; the child's records come after the parent's.
        parent.closed = True
        child = streams.add_shard("shard-2", parent="shard-1")
        for _ in range(3):
            streams.put(child, "j", log.append("j", text="in the child"))
        streams.put(child, "j", log.append("j", state=JobState.DONE))
        seqs = await follower
        await feed.close()
        return seqs, log, streams

    seqs, log, streams = _run(scenario())
    assert seqs == list(range(1, 9))
    # Live events came from the stream: only the replay and no catch-up queried the table.
    assert log.queries == 1
    assert ("shard-2", "TRIM_HORIZON") in streams.iterator_requests


def test_an_expired_iterator_resumes_after_the_last_record_read():
    async def scenario():
        log, streams = Log(), FakeStreams()
        shard = streams.add_shard("shard-1")
        feed, follower = await _following(streams, log)
        streams.put(shard, "j", log.append("j", text="one"))
        await _until(lambda: streams.iterator_requests.count(("shard-1", "LATEST")) >= 1)
        await asyncio.sleep(0.02)
        streams.failures["get_records"] = ["ExpiredIteratorException"]
        streams.put(shard, "j", log.append("j", text="two"))
        streams.put(shard, "j", log.append("j", state=JobState.DONE))
        seqs = await follower
        await feed.close()
        return seqs, streams

    seqs, streams = _run(scenario())
    assert seqs == [1, 2, 3, 4]
    assert ("shard-1", "AFTER_SEQUENCE_NUMBER") in streams.iterator_requests


@pytest.mark.parametrize("failure", ["TrimmedDataAccessException", "ResourceNotFoundException"])
def test_lost_records_are_caught_up_from_the_table(failure):
    """Trimmed data, or a stream that is gone: the events written meanwhile never come from
    the stream, yet the follower gets them all, in order."""

    async def scenario():
        log, streams = Log(), FakeStreams()
        streams.add_shard("shard-1")
        feed, follower = await _following(streams, log)
        # Written to the table only: the stream lost them.
        log.append("j", text="lost one")
        log.append("j", state=JobState.DONE)
        streams.failures["get_records"] = [failure]
        seqs = await follower
        await feed.close()
        return seqs

    assert _run(scenario()) == [1, 2, 3]


def test_a_stalled_subscriber_delays_no_one_and_catches_up_without_loss():
    async def scenario():
        log, streams = Log(), FakeStreams()
        shard = streams.add_shard("shard-1")
        # A subscriber holds at most 1 MB; the job writes 50 events of 100 KB of text.
        feed, follower = await _following(streams, log, capacity_bytes=1024 * 1024)
        stalled = feed.subscribe("j")  # never reads while the job writes
        held = 0
        for index in range(50):
            streams.put(shard, "j", log.append("j", text=f"message {index} " + "€" * 33_000))
            await asyncio.sleep(0.01)
            held = max(held, stalled.queued_bytes)
        streams.put(shard, "j", log.append("j", state=JobState.CANCELLED))
        seqs = await follower
        # The stalled one was told to catch up, holding no more than its bytes meanwhile.
        assert 0 < held <= 1024 * 1024
        first = await stalled.next(1)
        feed.unsubscribe(stalled)
        late = await _collect(feed, log, "j")
        await feed.close()
        return seqs, first, late

    seqs, first, late = _run(scenario())
    assert seqs == list(range(1, 53))
    assert first is RESYNC
    assert late == list(range(1, 53))


def test_closing_the_feed_ends_open_follows_with_unavailable_and_empties_the_registry():
    async def scenario():
        log, streams = Log(), FakeStreams()
        streams.add_shard("shard-1")
        feed, follower = await _following(streams, log)
        await feed.close()
        with pytest.raises(Unavailable):
            await follower
        return feed.subscriber_count

    assert _run(scenario()) == 0


def test_a_woken_feed_reads_at_once_instead_of_at_its_next_poll():
    async def scenario():
        log, streams = Log(), FakeStreams()
        shard = streams.add_shard("shard-1")
        slow = {"busy_interval": 30.0, "max_idle_interval": 30.0, "describe_interval": 30.0}
        feed, follower = await _following(streams, log, **slow)
        streams.put(shard, "j", log.append("j", text="written"))
        streams.put(shard, "j", log.append("j", state=JobState.DONE))
        started = asyncio.get_running_loop().time()
        feed.wake()
        seqs = await asyncio.wait_for(follower, 2)
        waited = asyncio.get_running_loop().time() - started
        await feed.close()
        return seqs, waited, log

    seqs, waited, log = _run(scenario())
    assert seqs == [1, 2, 3]
    assert waited < 1.0
    assert log.queries == 1  # from the stream, not from a catch-up


def test_a_follower_cancelled_as_an_item_arrives_is_cancelled_and_unsubscribed():
    """The cancellation and the item land in the same loop iteration (a client hanging up as
    the feed resyncs): the follower ends, rather than keeping the item and its subscription."""

    async def scenario():
        log, streams = Log(), FakeStreams()
        streams.add_shard("shard-1")
        feed, follower = await _following(streams, log)
        await _until(lambda: feed.subscriber_count == 1)
        await asyncio.sleep(0.05)  # the follower waits on its subscription
        feed._broadcast(RESYNC)
        follower.cancel()
        await asyncio.wait({follower}, timeout=2)
        ended, count = follower.cancelled(), feed.subscriber_count
        await feed.close()
        return ended, count

    assert _run(scenario()) == (True, 0)


def test_subscribers_past_the_feeds_limit_are_resource_exhausted_and_not_registered():
    feed = _feed(FakeStreams(), Log(), max_subscribers=2)
    feed.subscribe("a")
    feed.subscribe("b")
    with pytest.raises(ResourceExhausted, match="at most 2 streams"):
        feed.subscribe("c")
    assert feed.subscriber_count == 2


# -- the doorbell: when the followed jobs are as fresh as a read ------------------------------


def _job(job_id: str, seq: int, state: JobState) -> Job:
    return Job(
        job_id=job_id,
        job_name="n",
        state=state,
        state_time=seq,
        seq=seq,
        created_at=0,
        pipeline_ref="pipelines/p",
        options_ref="options/o",
        owner="alice",
    )


async def _ring(feed: ChangeFeed, bell: int) -> None:
    """As the embedded AWS does after an item put, before answering it; then wait until the
    reader answered the ring."""
    os.write(bell, b".")
    assert not feed.current  # a ring waits in the pipe: not current until a round read after it
    await _until(lambda: feed.current)


def test_followed_jobs_are_current_only_once_a_round_read_every_ring_and_follow_their_log():
    async def scenario():
        log, streams = Log(), FakeStreams()
        shard = streams.add_shard("shard-1")
        feed = _feed(streams, log)
        reader_end, bell = os.pipe()
        feed.start()
        assert not feed.current  # no doorbell: never current (on AWS, every read is a read)
        feed.listen_to_doorbell(reader_end)
        await _until(lambda: feed.current)  # positioned, and no ring waits
        feed.followed.remember(_job("j", 2, JobState.STARTING))
        feed.followed.remember(_job("j", 1, JobState.STOPPED))  # an older read changes nothing
        assert feed.followed.get("j").state is JobState.STARTING
        # Written (put, rung) then read: the followed job moves with its log, messages too.
        for _ in range(2):
            log.append("j")
        streams.put(shard, "j", log.append("j", state=JobState.RUNNING))
        await _ring(feed, bell)
        assert (feed.followed.get("j").seq, feed.followed.get("j").state) == (3, JobState.RUNNING)
        streams.put(shard, "j", log.append("j", text="a message"))
        await _ring(feed, bell)
        assert (feed.followed.get("j").seq, feed.followed.get("j").state) == (4, JobState.RUNNING)
        # A job nobody read is not followed, whatever its records say.
        streams.put(shard, "k", log.append("k", state=JobState.RUNNING))
        await _ring(feed, bell)
        assert feed.followed.get("k") is None
        # A round that could not read (throttled) leaves the feed not current until one does.
        streams.failures["get_records"] = ["ThrottlingException"]
        os.write(bell, b".")
        await _until(lambda: not streams.failures["get_records"])
        assert not feed.current
        await _until(lambda: feed.current)
        # Records that may have been missed (trimmed before they were read) forget every
        # followed job: they are read again.
        streams.failures["get_records"] = ["TrimmedDataAccessException"]
        os.write(bell, b".")
        await _until(lambda: feed.current)
        assert feed.followed.get("j") is None
        await feed.close()
        assert not feed.current
        os.close(bell)
        os.close(reader_end)

    _run(scenario())


def test_the_followed_jobs_are_the_newest_few():
    followed = FollowedJobs(capacity=2)
    for job_id in ("a", "b", "c"):
        followed.remember(_job(job_id, 1, JobState.STOPPED))
    assert [followed.get(j) is not None for j in ("a", "b", "c")] == [False, True, True]
    # A record that does not decode forgets its job (a read says what is wrong with it).
    followed.saw("b", {"seq": _serialize(2)})
    assert followed.get("b") is None and len(followed) == 1
