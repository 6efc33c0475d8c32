"""Control: Prepare, Run, Cancel, Drain, and an artifact staging session's BeginStaging (its lease
on the staging token) and RecordStaging (its outcome).
Writes jobs and starts or stops their work, so its role may write the table and the bucket and
drive the executor."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from beamjobs import runtime
from beamjobs.app.handlers import Route, caller_of, dispatch, idempotency_records
from beamjobs.app.service import JobControl
from beamjobs.aws.caller_key import caller_key
from beamjobs.domain.errors import InvalidArgument
from beamjobs.domain.jobs import Jobs
from beamjobs.settings import Settings

logger = Logger(service="beamjobs-control")
metrics = Metrics(namespace="Beamjobs", service="beamjobs-control")
tracer = Tracer(service="beamjobs-control")
# Keyed by the shim's per-call request id, so only retries of one call are deduplicated.
idempotency_config = IdempotencyConfig(event_key_jmespath="[rpc, request_id]")


@functools.cache
def _caller_key() -> bytes:
    return caller_key(Settings.from_env())


@functools.cache
def _routes() -> dict[str, Route]:
    """Built once per execution environment, on first use (never at import time)."""
    settings = Settings.from_env()
    stores = runtime.stores(settings)
    service = JobControl(
        Jobs(stores.jobs),
        stores.blobs,
        runtime.engines(settings),
        stores.artifacts,
        settings.quotas(),
    )
    # Retries of one Prepare (same request_id) get the first call's answer, not a second job.
    # A Run needs no record: the job aggregate starts a job once, whoever asks again.
    persistence = idempotency_records(settings)
    once = functools.partial(
        idempotent_function,
        data_keyword_argument="call",
        persistence_store=persistence,
        config=idempotency_config,
    )

    @once
    def prepare(call: dict[str, Any]) -> dict[str, Any]:
        request = call["request"]
        job_id = service.prepare(
            caller_of(call),
            pipeline_ref=_required(request, "pipeline_ref"),
            options=request.get("pipeline_options", {}),
            job_name=request.get("job_name", ""),
            staging_token_sha256=request.get("staging_token_sha256"),
        )
        metrics.add_metric(name="JobsPrepared", unit=MetricUnit.Count, value=1)
        return {"preparation_id": job_id}

    def run(call: dict[str, Any]) -> dict[str, Any]:
        job_id = service.run(caller_of(call), call["request"].get("preparation_id"))
        metrics.add_metric(name="JobsStarted", unit=MetricUnit.Count, value=1)
        return {"job_id": job_id}

    def cancel(call: dict[str, Any]) -> dict[str, Any]:
        return {"state": service.cancel(caller_of(call), call["request"].get("job_id")).value}

    def drain(call: dict[str, Any]) -> dict[str, Any]:
        return {"state": service.drain(caller_of(call), call["request"].get("job_id")).value}

    def begin_staging(call: dict[str, Any]) -> dict[str, Any]:
        request = call["request"]
        preparation = service.begin_staging(
            caller_of(call),
            request.get("preparation_id"),
            _required(request, "token_sha256"),
            _required(request, "session"),
        )
        return {
            "pipeline_ref": preparation.pipeline_ref,
            "artifact_bytes": preparation.artifact_bytes,
        }

    def record_staging(call: dict[str, Any]) -> dict[str, Any]:
        request = call["request"]
        unstaged = service.record_staging(
            caller_of(call),
            request.get("preparation_id"),
            _required(request, "session"),
            _required(request, "pipeline_ref"),
            request.get("artifact_bytes", 0),
        )
        return {"unstaged": unstaged}

    return {
        "Prepare": prepare,
        "Run": run,
        "Cancel": cancel,
        "Drain": drain,
        "BeginStaging": begin_staging,
        "RecordStaging": record_staging,
    }


def _required(request: dict[str, Any], name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name} is required")
    return value


@logger.inject_lambda_context
# No answer is captured in traces: answers carry staging tokens and presigned URLs.
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency_config.register_lambda_context(context)
    return dispatch(event, _routes(), caller_key=_caller_key)
