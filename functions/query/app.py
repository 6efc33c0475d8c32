"""Queries: GetJobs, GetState, GetPipeline, GetJobMetrics, DescribePipelineOptions, and Beamjobs'
own ListJobs, GetJob and ListMessages. Read-only, so its role may only read the table and the
bucket."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from beamjobs import runtime
from beamjobs.app import answers
from beamjobs.app.handlers import Route, caller_of, dispatch
from beamjobs.app.service import JobQueries
from beamjobs.aws.caller_key import caller_key
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.options import ENGINE, SERVICE_OPTIONS
from beamjobs.pipeline.validation import require_id
from beamjobs.proto_json import to_answer
from beamjobs.settings import Settings

logger = Logger(service="beamjobs-query")
tracer = Tracer(service="beamjobs-query")


@functools.cache
def _caller_key() -> bytes:
    return caller_key(Settings.from_env())


@functools.cache
def _routes() -> dict[str, Route]:
    """Built once per execution environment, on first use (never at import time)."""
    settings = Settings.from_env()
    stores = runtime.stores(settings)
    service = JobQueries(Jobs(stores.jobs), stores.blobs, stores.artifacts.location)

    def get_jobs(call: dict[str, Any]) -> dict[str, Any]:
        return to_answer(answers.job_infos(service.list_jobs(caller_of(call))))

    def get_state(call: dict[str, Any]) -> dict[str, Any]:
        job = service.get(caller_of(call), call["request"].get("job_id"))
        return {"state": job.state.value, "timestamp": job.state_time}

    def get_pipeline(call: dict[str, Any]) -> dict[str, Any]:
        # Pipelines can exceed Lambda's 6 MB response: answer with the S3 reference.
        job = service.get(caller_of(call), call["request"].get("job_id"))
        return {"pipeline_ref": job.pipeline_ref}

    def get_job_metrics(call: dict[str, Any]) -> dict[str, Any]:
        job = service.get(caller_of(call), call["request"].get("job_id"))
        return {"metrics_ref": job.metrics_ref}

    def list_jobs(call: dict[str, Any]) -> dict[str, Any]:
        request = call["request"]
        jobs, token = service.page(
            caller_of(call),
            size=request.get("page_size", 0),
            token=request.get("page_token", ""),
            states=request.get("states", ()),
            name_prefix=request.get("name_prefix", ""),
            created_after=request.get("created_after"),
            created_before=request.get("created_before"),
            owner=request.get("owner", ""),
        )
        return to_answer(answers.job_list(jobs, token))

    def get_job(call: dict[str, Any]) -> dict[str, Any]:
        detail = service.detail(caller_of(call), call["request"].get("job_id"))
        return to_answer(answers.job_detail(detail, service.now()))

    def list_messages(call: dict[str, Any]) -> dict[str, Any]:
        request = call["request"]
        page = service.messages(
            caller_of(call),
            require_id(request.get("job_id")),
            minimum_importance=request.get("minimum_importance", ""),
            token=request.get("page_token", ""),
        )
        return to_answer(answers.message_page(page))

    # The engines this deployment offers, for --beamjobs_engine's description.
    engine = replace(ENGINE, description=settings.engine_choice().description())

    def describe_pipeline_options(call: dict[str, Any]) -> dict[str, Any]:
        return to_answer(answers.option_descriptors((*SERVICE_OPTIONS, engine)))

    return {
        "GetJobs": get_jobs,
        "GetState": get_state,
        "GetPipeline": get_pipeline,
        "GetJobMetrics": get_job_metrics,
        "DescribePipelineOptions": describe_pipeline_options,
        "ListJobs": list_jobs,
        "GetJob": get_job,
        "ListMessages": list_messages,
    }


@logger.inject_lambda_context
# No answer is captured in traces: answers carry staging tokens and presigned URLs.
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dispatch(event, _routes(), caller_key=_caller_key)
