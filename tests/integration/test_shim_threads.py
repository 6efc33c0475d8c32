"""The shim's threads, one pool per kind of work (beamjobs.shim.pools): Lambda throttling that
holds every handler invocation does not starve the streams, and /healthz tells a starved shim."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc
from beamjobs.domain.states import JobState
from beamjobs.local.invoker import InProcessInvoker
from beamjobs.shim import pools
from beamjobs_functions.control.app import lambda_handler as control
from beamjobs_functions.query.app import lambda_handler as query
from tests.integration.conftest import make_job, running_shim
from tests.jobstates import advance


class ThrottledQueries(InProcessInvoker):
    """The query function, throttled: each invocation waits (as the invoker's backoff would)
    until `released`."""

    def __init__(self) -> None:
        super().__init__({"control": control, "query": query})
        self.released = threading.Event()
        self.waiting = 0

    def invoke(self, function, event):
        if function == "query":
            self.waiting += 1
            self.released.wait(60)
        return super().invoke(function, event)


def test_throttled_handler_invocations_do_not_starve_the_streams(
    monkeypatch, settings, stores, executor
):
    monkeypatch.setattr(pools, "STARVED_SECONDS", 0.5)
    monkeypatch.setattr(pools, "PROBE_SECONDS", 0.1)
    stores.jobs.create(make_job("j1"))
    advance(stores.jobs, "j1", JobState.STARTING)
    invoker = ThrottledQueries()
    with running_shim(settings, invoker) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        # Given more GetState calls held up by a throttled function than invocation threads
        held = [
            stub.GetState.future(api.GetJobStateRequest(job_id="j1"), timeout=60)
            for _ in range(pools.INVOCATION_THREADS + 8)
        ]
        deadline = time.monotonic() + 10
        while invoker.waiting < pools.INVOCATION_THREADS:
            assert time.monotonic() < deadline, invoker.waiting
            time.sleep(0.05)
        # When a client opens a state stream, it is served at once, and follows the job
        stream = stub.GetStateStream(api.GetJobStateRequest(job_id="j1"), timeout=10)
        assert [next(stream).state for _ in range(2)] == [
            api.JobState.STOPPED,
            api.JobState.STARTING,
        ]
        advance(stores.jobs, "j1", JobState.RUNNING)
        assert next(stream).state == api.JobState.RUNNING
        stream.cancel()
        # And /healthz keeps the shim in service, saying the invocations wait
        time.sleep(0.7)
        healthy, why = shim.health()
        assert healthy, why
        assert why.startswith("ok; handler invocations wait")
        # Then, the throttle over, every held call is answered
        invoker.released.set()
        assert {call.result().state for call in held} == {api.JobState.RUNNING}
        deadline = time.monotonic() + 5
        while shim.health() != (True, "ok"):
            assert time.monotonic() < deadline, shim.health()
            time.sleep(0.1)


def test_a_pool_whose_probe_waits_past_the_limit_is_starved(monkeypatch):
    monkeypatch.setattr(pools, "STARVED_SECONDS", 0.3)
    monkeypatch.setattr(pools, "PROBE_SECONDS", 0.05)
    reads, staging = ThreadPoolExecutor(2), ThreadPoolExecutor(2)
    released = threading.Event()
    for _ in range(2):
        reads.submit(released.wait, 30)

    async def watch_for(seconds):
        watch = pools.PoolWatch({"reads": reads, "staging": staging})
        watch.start()
        await asyncio.sleep(seconds)
        starved = watch.starved()
        released.set()
        await asyncio.sleep(0.3)
        after = watch.starved()
        await watch.close()
        return starved, after

    starved, after = asyncio.run(watch_for(0.8))
    assert list(starved) == ["reads"] and starved["reads"] > 0.3
    assert after == {}
    reads.shutdown()
    staging.shutdown()


def test_a_shim_stopping_is_out_of_service(settings, stores, executor):
    with running_shim(settings) as shim:
        assert shim.health() == (True, "ok")
        shim.stop()
        assert shim.health() == (False, "stopping")
