"""DynamoDB Streams as AWS runs it: records older than 24 h are trimmed away, a shard serves
at most two readers (a third is refused), and its calls are throttled. A subscriber still
gets every event of its job, once, in order, and the terminal state."""

import threading
import time

import pytest

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.domain.states import JobState
from beamjobs.shim.streams import SILENCE_CHECK_SECONDS
from tests.integration.conftest import pipeline_bytes
from tests.jobstates import advance


def _follow(stub, job_id, into):
    for response in stub.GetMessageStream(api.JobMessagesRequest(job_id=job_id)):
        if response.HasField("message_response"):
            into.append(response.message_response.message_text)
        else:
            into.append(api.JobState.Enum.Name(response.state_response.state))


# An iterator that expired, or a stream that vanished, makes the reader ask for a new iterator
# or list the stream's shards again: the refusal under test then meets those calls.
EXPIRED = ("GetRecords", "ExpiredIteratorException")
GONE = ("GetRecords", "ResourceNotFoundException")


@pytest.mark.parametrize(
    ("operation", "code", "after"),
    [
        ("GetRecords", "TrimmedDataAccessException", None),
        ("GetRecords", "LimitExceededException", None),
        ("GetShardIterator", "ThrottlingException", EXPIRED),
        ("GetShardIterator", "LimitExceededException", GONE),
        ("DescribeStream", "LimitExceededException", GONE),
    ],
)
def test_a_follower_gets_every_event_once_whatever_the_stream_refuses(
    channel, stores, faults, operation, code, after
):
    # Given a job followed by a client, and its shim's stream calls refused (5 times) with
    # what DynamoDB Streams answers for records past retention, a third reader, or throttling
    stub = job_api_pb2_grpc.JobServiceStub(channel)
    job_id = stub.Prepare(
        api.PrepareJobRequest(pipeline=pipeline_bytes(), job_name="job")
    ).preparation_id
    seen: list[str] = []
    follower = threading.Thread(target=_follow, args=(stub, job_id, seen))
    follower.start()
    if after is not None:
        faults.add(after[0], "error", code=after[1], times=1)
    faults.add(operation, "error", code=code, times=5)
    # When the job runs, says 30 things, and ends
    advance(stores.jobs, job_id, JobState.STARTING, JobState.RUNNING)
    for index in range(30):
        Jobs(stores.jobs).say(job_id, [Message("JOB_MESSAGE_BASIC", f"line {index}", 1.0)])
    # (the feed meets the refusal under test while the job is live: after an earlier fault it
    # comes back to the stream only after its backoff, which the job's end would not wait for)
    deadline = time.monotonic() + 10
    while (operation, "error") not in faults.fired and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (operation, "error") in faults.fired
    advance(stores.jobs, job_id, JobState.DONE)
    # Then the stream ended well before the shim's last resort, its silence check, would have
    # noticed a gap; and the follower saw every state and message, once, in order
    follower.join(SILENCE_CHECK_SECONDS / 2)
    assert not follower.is_alive()
    lines = [f"line {index}" for index in range(30)]
    assert seen == ["STOPPED", "STARTING", "RUNNING", *lines, "DONE"]
