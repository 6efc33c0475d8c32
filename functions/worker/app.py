"""Worker: the channel through which a job's worker reports (Claim, Beat, Say, PublishMetrics,
Finish, Fail), each call for the job whose worker secret it carries and for no other; and,
with a warm pool, through which a pooled task takes the job offered to it (TakeOffer). Its role
may write the table and read and write the bucket; the workers' own role may only invoke it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.idempotency import (
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from beamjobs import runtime
from beamjobs.app.handlers import Route, dispatch, idempotency_records
from beamjobs.app.warm_offers import WarmOffers, take_offer_route
from beamjobs.app.worker_channel import WorkerChannel, routes
from beamjobs.aws import clients
from beamjobs.aws.invoker import Handler
from beamjobs.aws.signed_identity import WORKER_CHANNEL, Verifier, sts_url
from beamjobs.aws.warm_pool import answer_offer, protect_from_scale_in
from beamjobs.domain.jobs import Jobs
from beamjobs.settings import Settings

logger = Logger(service="beamjobs-worker-channel")
tracer = Tracer(service="beamjobs-worker-channel")
# A call sent again (its answer lost, or its invocation timed out) gets the first one's answer:
# a claim is not lost to a retry, a batch of messages is not said twice.
idempotency_config = IdempotencyConfig(event_key_jmespath="[rpc, request_id]")
# Only the calls whose retry the job aggregate would not recognise are recorded (each record
# costs two writes): a mirror's own messages (which have no upstream id) would be appended
# twice, and a pooled task's TakeOffer, whose retry would find the offer taken (by itself). A
# Claim or Say sent again finds itself on the job's log (Job.last_report); a beat,
# metrics written again, a final state or an attachment that stands are the same done twice.
_RECORDED = frozenset({"Mirror", "TakeOffer"})


def handler_for(settings: Settings) -> Handler:
    """The worker function's handler for `settings`: what Lambda runs on AWS (with the settings
    of its environment), and what the local executor serves to its workers (with its own)."""
    stores = runtime.stores(settings)
    channel = WorkerChannel(
        Jobs(stores.jobs), Jobs(stores.outcomes), stores.blobs, stores.artifacts.location
    )
    persistence = idempotency_records(settings)
    served: dict[str, Route] = {
        name: idempotent_function(
            route,
            data_keyword_argument="call",
            persistence_store=persistence,
            config=idempotency_config,
        )
        if name in _RECORDED
        else route
        for name, route in routes(channel).items()
    }
    if settings.warm_pool_role:
        served["TakeOffer"] = take_offer_route(warm_offers(settings))

    @logger.inject_lambda_context
    # No answer is captured in traces: a Claim's carries presigned URLs.
    @tracer.capture_lambda_handler(capture_response=False)
    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        idempotency_config.register_lambda_context(context)
        return dispatch(event, served, caller_key=None)

    return handle


def warm_offers(settings: Settings) -> WarmOffers:
    """Offers to the warm pool's tasks, which prove themselves to STS (AWS's, or the embedded
    AWS's) for the worker channel."""
    assert settings.warm_pool_role
    stores = runtime.stores(settings)
    return WarmOffers(
        stores.jobs,
        stores.blobs,
        functools.partial(answer_offer, clients.client("stepfunctions", settings)),
        _protector(settings),
        Verifier(
            sts_url(settings.region, settings.endpoint_url),
            frozenset({WORKER_CHANNEL}),
        ),
        pool_role=settings.warm_pool_role,
    )


def _protector(settings: Settings) -> Callable[[str], None]:
    """What keeps a pooled task that took a job from the pool's scale-in: nothing where there
    is no ECS cluster to ask (a pool simulated offline)."""
    if not settings.cluster:
        return lambda task: None
    return functools.partial(
        protect_from_scale_in, clients.client("ecs", settings), settings.cluster
    )


@functools.cache
def _deployed() -> Handler:
    """Built once per execution environment, on first use (never at import time)."""
    return handler_for(Settings.from_env())


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _deployed()(event, context)
