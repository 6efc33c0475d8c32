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
from beamjobs.app.handlers import Route, dispatch, idempotency_records
from beamjobs.app.worker_channel import WorkerChannel, routes
from beamjobs.aws.invoker import Handler
from beamjobs.domain.jobs import Jobs
from beamjobs.settings import Settings

logger = Logger(service="beamjobs-worker-channel")
tracer = Tracer(service="beamjobs-worker-channel")
# A call sent again (its answer lost, or its invocation timed out) gets the first one's answer:
# a claim is not lost to a retry, a batch of messages is not said twice.
idempotency_config = IdempotencyConfig(event_key_jmespath="[rpc, request_id]")
# Only the calls whose retry the job aggregate would not recognise are recorded (each record
# costs two writes): a mirror's own messages (which have no upstream id) would be appended
# twice. A Claim or Say sent again finds itself on the job's log (Job.last_report); a beat,
# metrics written again, a final state or an attachment that stands are the same done twice.
_RECORDED = frozenset({"Mirror"})


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

    @logger.inject_lambda_context
    # No answer is captured in traces: a Claim's carries presigned URLs.
    @tracer.capture_lambda_handler(capture_response=False)
    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        idempotency_config.register_lambda_context(context)
        return dispatch(event, served, caller_key=None)

    return handle


@functools.cache
def _deployed() -> Handler:
    """Built once per execution environment, on first use (never at import time)."""
    return handler_for(Settings.from_env())


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _deployed()(event, context)
