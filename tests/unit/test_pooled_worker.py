"""A pooled worker's offers (beamjobs.worker.warm_pool): each is removed from the queue before it
is tried, and one past its window is dropped."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from beamjobs.worker.warm_pool import Offer, next_offer, offer_from


def _body(job_id: str, *, offered_seconds_ago: float, window: float = 5) -> str:
    offered_at = datetime.fromtimestamp(time.time() - offered_seconds_ago, UTC).isoformat()
    return json.dumps(
        {
            "job_id": job_id,
            "task_token": f"token-{job_id}",
            "offered_at": offered_at,
            "offer_seconds": window,
        }
    )


class Queue:
    def __init__(self, *bodies: str) -> None:
        self.messages = [{"Body": body, "ReceiptHandle": f"r{i}"} for i, body in enumerate(bodies)]
        self.deleted: list[str] = []

    def receive_message(self, **request):
        assert request["WaitTimeSeconds"] == 20 and request["MaxNumberOfMessages"] == 1
        return {"Messages": self.messages[:1]}

    def delete_message(self, QueueUrl, ReceiptHandle):  # noqa: N803 (boto3's names)
        self.deleted.append(ReceiptHandle)
        self.messages = [m for m in self.messages if m["ReceiptHandle"] != ReceiptHandle]


def test_an_offer_is_read_with_the_instant_its_window_closes():
    offer = offer_from(_body("job-1", offered_seconds_ago=1, window=5))
    assert isinstance(offer, Offer)
    assert (offer.job_id, offer.task_token) == ("job-1", "token-job-1")
    assert abs(offer.expires_at - (time.time() + 4)) < 0.5


def test_what_is_no_offer_reads_as_none():
    for body in ("", "[]", "{}", json.dumps({"job_id": "j", "task_token": "t", "offered_at": "x"})):
        assert offer_from(body) is None


def test_an_open_offer_is_deleted_before_it_is_tried_and_a_closed_one_dropped():
    queue = Queue(_body("late", offered_seconds_ago=9), _body("open", offered_seconds_ago=1))
    assert next_offer(queue, "queue") is None  # the late one: dropped, and deleted
    offer = next_offer(queue, "queue")
    assert offer is not None and offer.job_id == "open"
    assert queue.deleted == ["r0", "r1"] and not queue.messages
    assert next_offer(queue, "queue") is None  # an empty long poll
