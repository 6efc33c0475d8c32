"""Beamjobs' own Jobs service (beamjobs.v1.Jobs): ListJobs, GetJob and ListMessages, each a
handler event like the Job API's unary RPCs; answers turned from the handlers' JSON into
messages here."""

from __future__ import annotations

from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from beamjobs.api import job_api_pb2, jobs_pb2, jobs_pb2_grpc
from beamjobs.domain.errors import InvalidArgument
from beamjobs.shim.backend import Backend, guarded
from beamjobs.shim.times import message_time, timestamp

JobState = job_api_pb2.JobState
Importance = job_api_pb2.JobMessage.MessageImportance


def _optional_timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    return None if seconds is None else timestamp(seconds)


def _name(enum: Any, number: int, field: str) -> str:
    """An enum value's name; InvalidArgument for a number the enum does not have (proto3 keeps
    unknown numbers)."""
    try:
        return str(enum.Name(number))
    except ValueError:
        raise InvalidArgument(
            f"{field}: {number} is not a value of {enum.DESCRIPTOR.name}"
        ) from None


def _seconds(stamp: timestamp_pb2.Timestamp, present: bool) -> float | None:
    return stamp.seconds + stamp.nanos / 1e9 if present else None


def job_summary(values: dict[str, Any]) -> jobs_pb2.JobSummary:
    return jobs_pb2.JobSummary(
        job_id=values["job_id"],
        job_name=values["job_name"],
        state=JobState.Enum.Value(values["state"]),
        state_time=timestamp(values["state_time"]),
        created_at=timestamp(values["created_at"]),
        started_at=_optional_timestamp(values["started_at"]),
        ended_at=_optional_timestamp(values["ended_at"]),
        owner=values["owner"],
        engine=values["engine"],
        upstream_job_id=values["upstream_job_id"],
    )


class JobsServicer(jobs_pb2_grpc.JobsServicer):
    def __init__(self, backend: Backend) -> None:
        self._call = backend.call
        self._now = backend.stores.jobs.now

    @guarded
    async def ListJobs(self, request: Any, context: Any) -> Any:
        result = await self._call(
            "ListJobs",
            {
                "states": [_name(JobState.Enum, state, "states") for state in request.states],
                "name_prefix": request.name_prefix,
                "created_after": _seconds(request.created_after, request.HasField("created_after")),
                "created_before": _seconds(
                    request.created_before, request.HasField("created_before")
                ),
                "owner": request.owner,
                "page_size": request.page_size,
                "page_token": request.page_token,
            },
        )
        return jobs_pb2.ListJobsResponse(
            jobs=[job_summary(job) for job in result["jobs"]],
            next_page_token=result["next_page_token"],
        )

    @guarded
    async def GetJob(self, request: Any, context: Any) -> Any:
        result = await self._call("GetJob", {"job_id": request.job_id})
        summary = result["summary"]
        detail = jobs_pb2.JobDetail(
            summary=job_summary(summary),
            history=[
                job_api_pb2.JobStateEvent(
                    state=JobState.Enum.Value(event["state"]), timestamp=timestamp(event["time"])
                )
                for event in result["history"]
            ],
            environments=[
                jobs_pb2.Environment(
                    id=env["id"], urn=env["urn"], container_image=env["container_image"]
                )
                for env in result["environments"]
            ],
            artifacts=[jobs_pb2.Artifact(**artifact) for artifact in result["artifacts"]],
            worker=jobs_pb2.WorkerSize(**result["worker"]),
            bounded=result["bounded"],
            unstaged=result["unstaged"],
        )
        if summary["started_at"] is not None:
            end = summary["ended_at"] if summary["ended_at"] is not None else self._now()
            detail.run_duration.CopyFrom(_duration(end - summary["started_at"]))
        return detail

    @guarded
    async def ListMessages(self, request: Any, context: Any) -> Any:
        minimum = request.minimum_importance
        result = await self._call(
            "ListMessages",
            {
                "job_id": request.job_id,
                "minimum_importance": _name(Importance, minimum, "minimum_importance")
                if minimum
                else "",
                "page_token": request.page_token,
            },
        )
        return jobs_pb2.ListMessagesResponse(
            messages=[
                job_api_pb2.JobMessage(
                    message_id=m["id"],
                    time=message_time(m["time"]),
                    importance=Importance.Value(m["importance"]),
                    message_text=m["text"],
                )
                for m in result["messages"]
            ],
            next_page_token=result["next_page_token"],
            ended=result["ended"],
        )


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(max(seconds, 0.0) * 1e9))
    return duration
