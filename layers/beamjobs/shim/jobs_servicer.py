"""Beamjobs' own Jobs service (beamjobs.v1.Jobs): ListJobs, GetJob and ListMessages, each a
handler event like the Job API's unary RPCs, whose answer is the response message as JSON
(beamjobs.app.answers builds it)."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from beamjobs.api import job_api_pb2, jobs_pb2, jobs_pb2_grpc
from beamjobs.domain.errors import InvalidArgument
from beamjobs.proto_json import from_answer
from beamjobs.shim.backend import Backend, guarded

JobState = job_api_pb2.JobState
Importance = job_api_pb2.JobMessage.MessageImportance


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


class JobsServicer(jobs_pb2_grpc.JobsServicer):
    def __init__(self, backend: Backend) -> None:
        self._call = backend.call

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
        return from_answer(result, jobs_pb2.ListJobsResponse())

    @guarded
    async def GetJob(self, request: Any, context: Any) -> Any:
        result = await self._call("GetJob", {"job_id": request.job_id})
        return from_answer(result, jobs_pb2.JobDetail())

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
        return from_answer(result, jobs_pb2.ListMessagesResponse())
