"""Worker: the channel through which a job's worker reports (Claim, Beat, Say, PublishMetrics,
Finish, Fail), each call for the job whose worker secret it carries and for no other. Its role
may write the table and read and write the bucket; the workers' own role may only invoke it."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.idempotency import (
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from beamjobs import runtime
from beamjobs.handlers import Route, dispatch, idempotency_records
from beamjobs.jobs import Jobs
from beamjobs.settings import Settings
from beamjobs.worker_channel import WorkerChannel, routes

logger = Logger(service="beamjobs-worker-channel")
tracer = Tracer(service="beamjobs-worker-channel")
# A call sent again (its answer lost, or its invocation timed out) gets the first one's answer:
# a claim is not lost to a retry, a batch of messages is not said twice.
idempotency_config = IdempotencyConfig(event_key_jmespath="[rpc, request_id]")
# A heartbeat repeated is harmless, and the most frequent call: no record for it.
_UNRECORDED = frozenset({"Beat"})


@functools.cache
def _routes() -> dict[str, Route]:
    """Built once per execution environment, on first use (never at import time)."""
    settings = Settings.from_env()
    stores = runtime.stores(settings)
    channel = WorkerChannel(
        Jobs(stores.jobs), Jobs(stores.outcomes), stores.blobs, stores.artifacts.location
    )
    persistence = idempotency_records(settings, "worker")
    return {
        name: route
        if name in _UNRECORDED
        else idempotent_function(
            route,
            data_keyword_argument="call",
            persistence_store=persistence,
            config=idempotency_config,
        )
        for name, route in routes(channel).items()
    }


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency_config.register_lambda_context(context)
    return dispatch(event, _routes(), callers=False)
