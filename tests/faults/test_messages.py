"""A worker's messages under throttling: DynamoDB throttles a job that logs heavily, and
botocore's retries give up; the forwarder keeps what it could not store and stores it later,
in order, once, and a flood beyond its bound is counted instead of growing without limit."""

import logging

from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.worker.messages import QUEUE_LIMIT_BYTES, MessageForwarder
from tests.integration.conftest import make_job

log = logging.getLogger("user.pipeline")
PADDING = "x" * 10_000
# Lines of the flood: half as many again as the forwarder's bound holds.
LINES = QUEUE_LIMIT_BYTES * 3 // 2 // len(PADDING)


def _texts(stores, job_id):
    return [m.text for e in stores.jobs.events(job_id) for m in e.messages]


def test_throttled_message_writes_lose_and_repeat_nothing(stores, faults):
    # Given a job, and DynamoDB throttling its first 8 message puts (past the 6 attempts
    # botocore makes of a call: the first append fails outright)
    stores.jobs.create(make_job("chatty"))
    faults.add("PutItem", "throttle", times=8, when=lambda b: "messages" in b.get("Item", {}))
    # When the pipeline logs 120 lines through the forwarder
    with MessageForwarder(Jobs(stores.jobs).handle("chatty"), logging.WARNING, flush_seconds=0.05):
        for i in range(120):
            log.warning("line %d", i)
    # Then every line is stored, once, in order
    assert [f for f in faults.fired if f[1] == "throttle"] == [("PutItem", "throttle")] * 8
    assert _texts(stores, "chatty") == [f"line {i}" for i in range(120)]


def test_a_flood_beyond_the_bound_is_counted_not_queued_without_limit(stores, faults):
    # Given a store that refuses every message put for a while
    stores.jobs.create(make_job("flood"))
    rule = faults.add("PutItem", "throttle", times=10**9, when=lambda b: "messages" in b["Item"])
    # (Stored without a pace: the bound, not the rate, is under test.)
    forwarder = MessageForwarder(
        Jobs(stores.jobs).handle("flood"),
        logging.WARNING,
        flush_seconds=0.05,
        bytes_per_second=float("inf"),
    )
    with forwarder:
        # When the job logs far more bytes than the bound meanwhile (lines of 10 KB)
        for i in range(LINES):
            log.warning("flood %d %s", i, PADDING)
        rule.times = 0  # the throttling ends
    # Then what fitted is stored in order, and a warning says how many were dropped
    texts = _texts(stores, "flood")
    warnings = [t for t in texts if "log messages were dropped" in t]
    assert len(warnings) == 1
    dropped = int(warnings[0].split()[0])
    stored = [int(t.split()[1]) for t in texts if t.startswith("flood ")]
    # in order, none twice (once there is room again, later lines are taken again)
    assert stored == sorted(set(stored))
    fitted = QUEUE_LIMIT_BYTES // (len(PADDING) + 20)  # (each line's text is a little longer)
    assert stored[:fitted] == list(range(fitted))
    assert len(stored) + dropped == LINES
    # (what waited in the queue, and one batch the forwarder held while the store refused it)
    assert len(stored) * len(PADDING) <= QUEUE_LIMIT_BYTES + 50 * len(PADDING)


def test_a_cut_message_is_within_the_bound_and_is_not_cut_twice(stores):
    stores.jobs.create(make_job("long"))
    Jobs(stores.jobs).say("long", [Message("JOB_MESSAGE_ERROR", "€" * 200_000, 1.0)])
    [text] = _texts(stores, "long")
    assert text.count("[cut:") == 1 and len(text.encode()) <= 100_000
