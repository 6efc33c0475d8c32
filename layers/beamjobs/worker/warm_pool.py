"""A pooled worker: a task of the warm pool's ECS service (AWS), started ahead of need.

It imports Beam and makes its set-up while no job waits, then long-polls the offers queue. The
run-job state machine offers each job the pool can run there, and waits a few seconds for a
taker (beamjobs.app.warm_offers). This worker takes the first offer it receives, through the
worker channel, which answers with the job's worker secret; from there it is the job's worker
like any other, and it exits when the job is done: its service starts a fresh task in its place,
so no two jobs ever share a process, a task or its credentials' session. A task tries one
offer: should that one be gone (taken in the same instant by another worker, or timed out on the
way), the task exits and is replaced too.

An offer is tried by one worker only: it is deleted from the queue before it is taken, so a
worker that dies meanwhile leaves the job to start cold, never to run twice. An offer older than
its window is dropped unread: the state machine has started the job's own task.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beamjobs.aws import clients
from beamjobs.aws.signed_identity import WORKER_CHANNEL, sign, sts_url
from beamjobs.domain.errors import FailedPrecondition, PermissionDenied

logger = logging.getLogger(__name__)
# What a pooled worker logs once it is ready for a job (its set-up made).
READY = "ready: waiting for an offer"
# SQS's longest long poll: an idle worker costs one request per 20 s.
_LONG_POLL_SECONDS = 20


@dataclass(frozen=True)
class Offer:
    job_id: str
    task_token: str
    # When the state machine stops waiting for a taker (seconds since the epoch).
    expires_at: float


def offer_from(body: str) -> Offer | None:
    """The offer a message holds; None for one that is not an offer."""
    try:
        fields = json.loads(body)
        offered_at = datetime.fromisoformat(fields["offered_at"]).timestamp()
        return Offer(
            job_id=str(fields["job_id"]),
            task_token=str(fields["task_token"]),
            expires_at=offered_at + float(fields["offer_seconds"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def next_offer(sqs: Any, queue_url: str) -> Offer | None:
    """The next offer still open, removed from the queue; None when none came in a long poll."""
    answer = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=_LONG_POLL_SECONDS
    )
    for message in answer.get("Messages", []):
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        offer = offer_from(message["Body"])
        if offer is None:
            logger.warning("dropped a message that is no offer: %.200s", message["Body"])
        elif offer.expires_at <= time.time():
            logger.info("dropped the expired offer of job %s", offer.job_id)
        else:
            return offer
    return None


def serve_offers() -> int:
    """A pooled worker's whole life: wait for an offer, take it, run its job, exit."""
    # Imported here, as the worker's runner imports Beam: this module's offers and READY are
    # read without it (by the simulated AWS path's tests, which speak protobuf of their own).
    from beamjobs.worker.run import JobRunner, stop_on_sigterm
    from beamjobs.worker.warm_up import warm_up

    stop_on_sigterm()
    runner = JobRunner()  # imports done and clients made before any job waits
    warm_up()  # and Beam's caches filled
    settings = runner.settings
    if not settings.offers_queue:
        raise SystemExit("a pooled worker needs its queue (BEAMJOBS_OFFERS_QUEUE)")
    sqs = clients.client("sqs", settings)
    sts = sts_url(settings.region, clients.client("sts", settings).meta.endpoint_url)
    logger.info("%s on %s", READY, settings.offers_queue)
    while True:
        offer = next_offer(sqs, settings.offers_queue)
        if offer is None:
            continue
        proof = sign(
            clients.credentials(),
            region=settings.region,
            url=sts,
            deployment=WORKER_CHANNEL,
        )
        try:
            secret = runner.take_offer(offer.job_id, offer.task_token, proof)
        except (FailedPrecondition, PermissionDenied) as refusal:
            # A task tries one offer in its life (beamjobs.app.warm_offers): this one was gone,
            # or this task may take none. Its service starts a fresh task in its place.
            logger.warning("job %s not taken: %s", offer.job_id, refusal.message)
            return 1
        logger.info("took job %s", offer.job_id)
        return runner.run(offer.job_id, secret=secret)
