"""Reconcile: run on a schedule; fails jobs whose workers went silent past their lease. Its role
may read and write the table."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from beamjobs import runtime
from beamjobs.reconcile import fail_lost_jobs
from beamjobs.settings import Settings

logger = Logger(service="beamjobs-reconcile")
metrics = Metrics(namespace="Beamjobs", service="beamjobs-reconcile")
tracer = Tracer(service="beamjobs-reconcile")


@functools.cache
def _settings() -> Settings:
    return Settings.from_env()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = _settings()
    settled = fail_lost_jobs(runtime.stores(settings).jobs, lease_seconds=settings.lease_seconds)
    metrics.add_metric(name="WorkersLost", unit=MetricUnit.Count, value=len(settled))
    for job_id, state in settled.items():
        logger.warning("settled a job whose worker went silent", job_id=job_id, state=state.value)
    return {"settled": {job_id: state.value for job_id, state in settled.items()}}
