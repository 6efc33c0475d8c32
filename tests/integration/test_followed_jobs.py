"""GetState of a job the shim follows: answered as the change feed last saw it while the feed is
as fresh as a read (the embedded AWS rings its doorbell after every item put), by the query
function otherwise (as on AWS, which has no doorbell). Read-your-writes holds either way."""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc
from beamjobs.domain.states import JobState
from beamjobs.local.embedded import ring_on_item_puts
from beamjobs.local.invoker import InProcessInvoker
from tests.integration.conftest import pipeline_bytes, running_shim
from tests.jobstates import advance

Enum = api.JobState.Enum


class CountingInvoker(InProcessInvoker):
    """The real handlers in process, counting the calls each RPC makes of them."""

    def __init__(self) -> None:
        from beamjobs_functions.control.app import lambda_handler as control
        from beamjobs_functions.query.app import lambda_handler as query

        super().__init__({"control": control, "query": query})
        self.calls: Counter[str] = Counter()

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        self.calls[event["rpc"]] += 1
        return super().invoke(function, event)


@pytest.fixture(scope="session")
def doorbell(embedded_aws):
    """The embedded AWS's doorbell, as `beamjobs serve` gets it: one for the session, each
    test's shim listening to it in turn (the embedded AWS rings it until the session ends)."""
    reading, ringing = os.pipe()
    ring_on_item_puts(embedded_aws, ringing)
    return reading


def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def _followed_job(stub) -> str:
    prepared = stub.Prepare(api.PrepareJobRequest(pipeline=pipeline_bytes(), job_name="job"))
    stream = stub.GetStateStream(api.GetJobStateRequest(job_id=prepared.preparation_id))
    assert next(stream).state == Enum.STOPPED  # opened: the shim follows the job now
    stream.cancel()
    return prepared.preparation_id


def test_a_followed_job_is_answered_from_the_feed_and_every_write_is_seen_at_once(
    settings, stores, executor, doorbell
):
    invoker = CountingInvoker()
    with running_shim(settings, invoker=invoker) as shim:
        shim.listen_to_doorbell(doorbell)
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        job_id = _followed_job(stub)
        _until(lambda: shim.feed.current)
        for state in ("STARTING", "RUNNING", "DONE"):
            # Read-your-writes: asked at once after the write, it answers the write, whether
            # the feed read it yet or the query function did.
            advance(stores.jobs, job_id, JobState(state))
            assert stub.GetState(api.GetJobStateRequest(job_id=job_id)).state == Enum.Value(state)
            # Once the feed has read it, the job is answered without a call of the function.
            _until(lambda: shim.feed.current)
            before = invoker.calls["GetState"]
            for _ in range(20):
                answer = stub.GetState(api.GetJobStateRequest(job_id=job_id))
                assert answer.state == Enum.Value(state)
            assert invoker.calls["GetState"] == before
        # A job it does not follow is read by the function, as are unknown ones.
        other = stub.Prepare(api.PrepareJobRequest(pipeline=pipeline_bytes(), job_name="other"))
        before = invoker.calls["GetState"]
        assert stub.GetState(api.GetJobStateRequest(job_id=other.preparation_id)).state == (
            Enum.STOPPED
        )
        assert invoker.calls["GetState"] == before + 1


def test_without_a_doorbell_every_get_state_is_a_read(settings, stores, executor):
    invoker = CountingInvoker()
    with running_shim(settings, invoker=invoker) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        job_id = _followed_job(stub)
        for _ in range(5):
            assert stub.GetState(api.GetJobStateRequest(job_id=job_id)).state == Enum.STOPPED
        assert not shim.feed.current and invoker.calls["GetState"] == 5
