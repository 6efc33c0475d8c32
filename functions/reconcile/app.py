"""Reconcile: ends jobs whose workers could not record how they ended. Invoked on a schedule
(workers gone silent past their lease), by EventBridge when a run-job execution ends, and by the
state machine's Catch (the worker's task failed: it answers whether to start the task again,
for a task that never started within the job's start lease). Its role may read and write the
table."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from beamjobs import runtime
from beamjobs.app.reconcile import fail_lost_jobs, never_started, settle_execution, start_again
from beamjobs.app.service import require_id
from beamjobs.aws import clients
from beamjobs.aws.stepfunctions import Executions
from beamjobs.domain.errors import InvalidArgument
from beamjobs.settings import Settings

logger = Logger(service="beamjobs-reconcile")
metrics = Metrics(namespace="Beamjobs", service="beamjobs-reconcile")
tracer = Tracer(service="beamjobs-reconcile")

EXECUTION_STATUS_CHANGE = "Step Functions Execution Status Change"


@functools.cache
def _settings() -> Settings:
    return Settings.from_env()


@functools.cache
def _executions() -> Executions:
    """The jobs' executions, which say whether a silent worker's task still runs."""
    settings = _settings()
    assert settings.state_machine_arn  # the template sets it
    return Executions(clients.client("stepfunctions", settings), settings.state_machine_arn)


def _detail(error: Any, cause: Any) -> str:
    return ": ".join(str(part) for part in (error, cause) if part)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = _settings()
    jobs = runtime.stores(settings).jobs
    if event.get("detail-type") == EXECUTION_STATUS_CHANGE:
        detail = event.get("detail") or {}
        job_id = require_id(detail.get("name"), "detail.name")
        status = str(detail.get("status", ""))
        state = settle_execution(
            jobs, job_id, status, _detail(detail.get("error"), detail.get("cause"))
        )
        logger.info("execution ended", job_id=job_id, status=status, state=state.value)
        metrics.add_metric(name="ExecutionsEnded", unit=MetricUnit.Count, value=1)
        return {"settled": {job_id: state.value}}
    if "job_id" in event:  # the state machine's Catch: the worker's task failed
        job_id = require_id(event["job_id"])
        error, cause = str(event.get("error") or ""), str(event.get("cause") or "")
        reason = never_started(error, cause)
        wait = start_again(jobs, job_id, reason, settings.leases()) if reason else None
        if wait is not None:
            metrics.add_metric(name="WorkerTasksStartedAgain", unit=MetricUnit.Count, value=1)
            return {"retry": True, "wait_seconds": round(wait)}
        state = settle_execution(jobs, job_id, "FAILED", _detail(error, cause))
        metrics.add_metric(name="WorkerTasksFailed", unit=MetricUnit.Count, value=1)
        return {"retry": False, "settled": {job_id: state.value}}
    if event.get("detail-type") != "Scheduled Event":
        raise InvalidArgument(f"unexpected event: {sorted(event)}")
    settled = fail_lost_jobs(jobs, _executions(), settings.leases())
    metrics.add_metric(name="WorkersLost", unit=MetricUnit.Count, value=len(settled))
    for job_id, state in settled.items():
        logger.warning("settled a job whose worker went silent", job_id=job_id, state=state.value)
    return {"settled": {job_id: state.value for job_id, state in settled.items()}}
