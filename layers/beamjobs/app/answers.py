"""The answers the shim serves, as their protos, built once from the domain's records. A query
route sends them as JSON (beamjobs.proto_json) and the shim reads that back into the same
messages; the shim's streams build their state events and messages here too."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.protobuf import duration_pb2, timestamp_pb2

from beamjobs.api import job_api_pb2, jobs_pb2
from beamjobs.domain.model import Job, Message
from beamjobs.domain.options import OptionDescriptor
from beamjobs.domain.states import JobState, is_terminal

if TYPE_CHECKING:
    from beamjobs.app.service import JobDetail, JobInfo, MessagePage

_State = job_api_pb2.JobState.Enum
_Importance = job_api_pb2.JobMessage.MessageImportance


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def state_event(state: JobState, at: float) -> job_api_pb2.JobStateEvent:
    return job_api_pb2.JobStateEvent(state=_State.Value(state.value), timestamp=timestamp(at))


def job_message(message_id: str, message: Message) -> job_api_pb2.JobMessage:
    """A message as Beam's JobMessage (its time as ISO 8601 text, as Beam's servers send it)."""
    return job_api_pb2.JobMessage(
        message_id=message_id,
        time=datetime.fromtimestamp(message.time, UTC).isoformat(),
        importance=_Importance.Value(message.importance),
        message_text=message.text,
    )


def job_summary(job: Job) -> jobs_pb2.JobSummary:
    """A job as ListJobs lists it."""
    summary = jobs_pb2.JobSummary(
        job_id=job.job_id,
        job_name=job.job_name,
        state=_State.Value(job.state.value),
        state_time=timestamp(job.state_time),
        created_at=timestamp(job.created_at),
        owner=job.owner or "",
        engine=job.engine,
        upstream_job_id=job.upstream.job_id if job.upstream else "",
        failure=job.failure or "",
    )
    if job.started_at is not None:
        summary.started_at.CopyFrom(timestamp(job.started_at))
    if is_terminal(job.state):
        summary.ended_at.CopyFrom(timestamp(job.state_time))
    return summary


def job_list(jobs: Iterable[Job], next_page_token: str) -> jobs_pb2.ListJobsResponse:
    return jobs_pb2.ListJobsResponse(
        jobs=[job_summary(job) for job in jobs], next_page_token=next_page_token
    )


def job_detail(detail: JobDetail, now: float) -> jobs_pb2.JobDetail:
    """A job in full, as GetJob answers it: its run lasted until it ended, or until `now`."""
    job = detail.job
    answer = jobs_pb2.JobDetail(
        summary=job_summary(job),
        history=[state_event(state, at) for state, at in detail.history],
        environments=[
            jobs_pb2.Environment(id=e.environment_id, urn=e.urn, container_image=e.container_image)
            for e in detail.environments
        ],
        artifacts=[
            jobs_pb2.Artifact(
                environment_id=a.environment_id,
                staged_name=a.name,
                sha256=a.sha256,
                staged=a.staged,
            )
            for a in detail.dependencies
        ],
        worker=jobs_pb2.WorkerSize(vcpu=detail.worker_vcpu, memory_mb=detail.worker_memory_mb),
        bounded=job.bounded,
        unstaged=job.unstaged,
    )
    if detail.failure is not None:
        answer.failure = detail.failure.summary
        answer.failed_step = detail.failure.step
    if job.started_at is not None:
        end = job.state_time if is_terminal(job.state) else now
        run = duration_pb2.Duration()
        run.FromNanoseconds(int(max(end - job.started_at, 0.0) * 1e9))
        answer.run_duration.CopyFrom(run)
    return answer


def message_page(page: MessagePage) -> jobs_pb2.ListMessagesResponse:
    return jobs_pb2.ListMessagesResponse(
        messages=[job_message(message_id, message) for message_id, message in page.messages],
        next_page_token=page.next_token,
        ended=page.ended,
    )


def job_infos(infos: Iterable[JobInfo]) -> job_api_pb2.GetJobsResponse:
    """Beam's GetJobs answer."""
    answer = job_api_pb2.GetJobsResponse()
    for info in infos:
        added = answer.job_info.add(
            job_id=info.job_id, job_name=info.job_name, state=_State.Value(info.state.value)
        )
        added.pipeline_options.SetInParent()  # present even when empty, as Beam's servers answer
        added.pipeline_options.update(info.options)
    return answer


def option_descriptors(
    options: Iterable[OptionDescriptor],
) -> job_api_pb2.DescribePipelineOptionsResponse:
    """Beam's DescribePipelineOptions answer."""
    return job_api_pb2.DescribePipelineOptionsResponse(
        options=[
            job_api_pb2.PipelineOptionDescriptor(
                name=option.name,
                type=job_api_pb2.PipelineOptionType.Enum.Value(option.type),
                description=option.description,
                default_value=option.default_value,
                group=option.group,
            )
            for option in options
        ]
    )
