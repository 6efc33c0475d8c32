"""The change feed on the embedded AWS's real DynamoDB Stream: randomized writers and
subscribers that join at random moments (before, during and after a job's writes) all receive
exactly the stored sequence; and streams through the shim leave no subscription behind."""

import asyncio
import functools
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc
from beamjobs.aws import clients
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.domain.states import JobState
from beamjobs.shim.changefeed import ChangeFeed
from beamjobs.shim.gauges import Gauges
from beamjobs.shim.streams import follow
from tests.integration.conftest import make_job, running_shim
from tests.jobstates import advance

JOBS = 200
SUBSCRIBERS = 400
# About how long the writes take: subscribers join at random moments within it.
WRITE_SECONDS = 40
TERMINAL = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
ENDINGS = ([JobState.DONE], [JobState.FAILED], [JobState.CANCELLING, JobState.CANCELLED])


def _writes(rng, job_id):
    """One job's writes, in order: messages here and there, its states, a terminal state."""
    steps = []
    for state in (JobState.STARTING, JobState.RUNNING):
        steps += [("messages", rng.randint(1, 3))] * rng.randint(0, 1)
        steps.append(("state", state))
    steps += [("messages", rng.randint(1, 4))] * rng.randint(0, 1)
    steps += [("state", state) for state in rng.choice(ENDINGS)]
    return [(job_id, step) for step in steps]


def _interleave(rng, per_job):
    """All jobs' writes in one random order that keeps each job's own order."""
    queues = [list(writes) for writes in per_job]
    order = []
    while queues:
        queue = rng.choice(queues)
        order.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return order


async def _started_feed(settings, stores, pool):
    """A change feed whose blocking calls run on `pool`, once its reader has its iterators; and
    that blocking call."""
    loop = asyncio.get_running_loop()

    async def blocking(function, *args, **kwargs):
        return await loop.run_in_executor(pool, functools.partial(function, *args, **kwargs))

    feed = ChangeFeed(clients.client("dynamodbstreams", settings), stores.jobs, blocking)
    feed.start()
    await asyncio.sleep(0.5)
    return feed, blocking


def test_every_subscriber_gets_exactly_the_stored_sequence(settings, stores):
    rng = random.Random(20261127)
    jobs = [f"stress-{index:03d}" for index in range(JOBS)]
    for job_id in jobs:
        stores.jobs.create(make_job(job_id))
    order = _interleave(rng, [_writes(rng, job_id) for job_id in jobs])
    pool = ThreadPoolExecutor(32)

    def write(job_id, step):
        kind, value = step
        if kind == "messages":
            now = stores.jobs.now()
            Jobs(stores.jobs).say(
                job_id, [Message("JOB_MESSAGE_BASIC", f"{job_id} {i}", now) for i in range(value)]
            )
        else:
            advance(stores.jobs, job_id, value)

    def writer():
        # Three writers, each owning a third of the jobs, so each job's writes stay in order
        # while writes to different jobs interleave at random.
        def write_share(share):
            for job_id, step in order:
                if int(job_id.rsplit("-", 1)[1]) % 3 == share:
                    write(job_id, step)

        with ThreadPoolExecutor(3) as writers:
            for future in [writers.submit(write_share, share) for share in range(3)]:
                future.result()

    async def scenario():
        loop = asyncio.get_running_loop()
        feed, blocking = await _started_feed(settings, stores, pool)

        async def subscriber(job_id, delay):
            await asyncio.sleep(delay)
            seen = []
            async for event in follow(stores.jobs, feed, job_id, blocking, silence_check=30):
                seen.append((event.seq, event.state, event.messages))
            return job_id, seen

        writing = loop.run_in_executor(None, writer)
        subscribers = [
            subscriber(rng.choice(jobs), rng.uniform(0, WRITE_SECONDS)) for _ in range(SUBSCRIBERS)
        ]
        # A failing writer fails the test at once (instead of leaving subscribers waiting).
        _, *results = await asyncio.wait_for(asyncio.gather(writing, *subscribers), 300)
        # And some that subscribe after everything was written.
        results += await asyncio.gather(*(subscriber(job_id, 0) for job_id in jobs[:20]))
        count = feed.subscriber_count
        await feed.close()
        return results, count

    results, left = asyncio.run(scenario())
    pool.shutdown()
    assert left == 0
    for job_id, seen in results:
        stored = [(e.seq, e.state, e.messages) for e in stores.jobs.events(job_id)]
        assert seen == stored, job_id
        assert seen[-1][1] in TERMINAL


def test_a_thousand_connects_and_disconnects_leave_no_subscription(settings, stores, executor):
    stores.jobs.create(make_job("watched"))
    with running_shim(settings) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        for index in range(1000):
            request = api.GetJobStateRequest(job_id="watched")
            call = (stub.GetStateStream if index % 2 else stub.GetMessageStream)(
                request if index % 2 else api.JobMessagesRequest(job_id="watched")
            )
            next(call)  # the current state arrives at once
            call.cancel()
        deadline = time.monotonic() + 10
        while shim.feed.subscriber_count:
            assert time.monotonic() < deadline, shim.feed.subscriber_count
            time.sleep(0.05)


def test_a_stream_ends_with_unavailable_when_the_shim_stops(settings, stores, executor):
    stores.jobs.create(make_job("interrupted"))
    with running_shim(settings) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        call = stub.GetStateStream(api.GetJobStateRequest(job_id="interrupted"))
        assert next(call).state == api.JobState.STOPPED
        stopping = threading.Thread(target=shim.stop)
        stopping.start()
        try:
            next(call)
        except grpc.RpcError as error:
            code = error.code()
        stopping.join(10)
    assert code == grpc.StatusCode.UNAVAILABLE


def test_the_shims_gauges_say_its_subscribers_and_how_far_behind_the_feed_reads(
    settings, stores, monkeypatch, capsys
):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    stores.jobs.create(make_job("gauged"))
    pool = ThreadPoolExecutor(4)

    async def scenario():
        loop = asyncio.get_running_loop()
        feed, _ = await _started_feed(settings, stores, pool)
        subscription = feed.subscribe("gauged")
        await loop.run_in_executor(pool, advance, stores.jobs, "gauged", JobState.STARTING)
        assert await subscription.next(10) is not None  # read from the stream
        gauges = Gauges(feed)
        gauges.publish()  # one subscriber, and the lag of that read
        feed.unsubscribe(subscription)
        gauges.publish()  # none, and no read since
        await feed.close()

    asyncio.run(scenario())
    pool.shutdown()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    subscribers = [line["StreamSubscribers"] for line in lines if "StreamSubscribers" in line]
    lags = [line["ChangeFeedLag"][0] for line in lines if "ChangeFeedLag" in line]
    assert subscribers == [[1.0], [0.0]]
    assert 0 < lags[0] < 10_000 and lags[1] == 0  # milliseconds
