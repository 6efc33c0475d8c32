"""Beamjobs' own Jobs service through the shim: ListJobs, GetJob and ListMessages with the real
handlers behind the in-process invoker."""

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.domain.states import JobState
from tests.integration.conftest import pipeline_bytes
from tests.jobstates import advance

Enum = api.JobState.Enum
Importance = api.JobMessage.MessageImportance


@pytest.fixture
def stubs(channel):
    return job_api_pb2_grpc.JobServiceStub(channel), jobs_pb2_grpc.JobsStub(channel)


def _prepare(job_api, name):
    options = struct_pb2.Struct()
    options.update({"beam:option:job_name:v1": name})
    return job_api.Prepare(
        api.PrepareJobRequest(pipeline=pipeline_bytes(), pipeline_options=options, job_name="job")
    ).preparation_id


def _code(call):
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code()


def test_the_jobs_service_is_healthy(channel):
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service="beamjobs.v1.Jobs"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_list_jobs_filters_and_pages_newest_first(stubs, stores):
    job_api, jobs = stubs
    ids = [_prepare(job_api, name) for name in ("etl-a", "etl-b", "ml-c")]
    advance(stores.jobs, ids[1], JobState.CANCELLED)

    every = jobs.ListJobs(jobs_pb2.ListJobsRequest())
    first = jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=2))
    rest = jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=2, page_token=first.next_page_token))
    etl = jobs.ListJobs(jobs_pb2.ListJobsRequest(name_prefix="etl-"))
    cancelled = jobs.ListJobs(jobs_pb2.ListJobsRequest(states=[Enum.CANCELLED]))

    assert [j.job_id for j in every.jobs] == ids[::-1] and every.next_page_token == ""
    assert [j.job_id for j in [*first.jobs, *rest.jobs]] == ids[::-1] and rest.next_page_token == ""
    assert [j.job_id for j in etl.jobs] == ids[1::-1]
    [job] = cancelled.jobs
    assert (job.job_id, job.state, job.job_name) == (ids[1], Enum.CANCELLED, "etl-b")
    assert job.HasField("ended_at") and not job.HasField("started_at")
    assert job.owner == "local" and job.engine == "recording"


@pytest.mark.parametrize(
    "request_",
    [
        jobs_pb2.ListJobsRequest(page_size=1001),
        jobs_pb2.ListJobsRequest(page_size=-1),
        jobs_pb2.ListJobsRequest(page_token="not-a-token"),
        jobs_pb2.ListJobsRequest(name_prefix="x" * 501),
        jobs_pb2.ListJobsRequest(states=[99]),
    ],
)
def test_a_malformed_listing_is_invalid_argument(stubs, request_):
    assert _code(lambda: stubs[1].ListJobs(request_)) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_token_for_other_filters_is_refused(stubs):
    job_api, jobs = stubs
    for name in ("a", "b"):
        _prepare(job_api, name)
    token = jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=1)).next_page_token
    assert token
    other = jobs_pb2.ListJobsRequest(page_size=1, page_token=token, name_prefix="a")
    assert _code(lambda: jobs.ListJobs(other)) == grpc.StatusCode.INVALID_ARGUMENT


def test_get_job_gives_history_environments_and_worker(stubs, stores):
    job_api, jobs = stubs
    job_id = _prepare(job_api, "detailed")
    advance(stores.jobs, job_id, JobState.STARTING, JobState.RUNNING, JobState.DONE)

    detail = jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id))

    assert detail.summary.job_id == job_id and detail.summary.state == Enum.DONE
    assert [e.state for e in detail.history] == [
        Enum.STOPPED,
        Enum.STARTING,
        Enum.RUNNING,
        Enum.DONE,
    ]
    started, ended = (
        detail.summary.started_at.ToNanoseconds(),
        detail.summary.ended_at.ToNanoseconds(),
    )
    assert detail.run_duration.ToNanoseconds() == pytest.approx(ended - started, abs=1000)
    assert (detail.worker.vcpu, detail.worker.memory_mb) == (1.0, 4096)
    assert detail.bounded


def test_list_messages_pages_by_importance_and_says_when_the_job_ended(stubs, stores):
    job_api, jobs = stubs
    job_id = _prepare(job_api, "talkative")
    say = Jobs(stores.jobs).say
    say(
        job_id,
        [Message("JOB_MESSAGE_DEBUG", "debug", 1.0), Message("JOB_MESSAGE_WARNING", "warn", 2.0)],
    )
    say(job_id, [Message("JOB_MESSAGE_ERROR", "error", 3.0)])

    every = jobs.ListMessages(jobs_pb2.ListMessagesRequest(job_id=job_id))
    important = jobs.ListMessages(
        jobs_pb2.ListMessagesRequest(
            job_id=job_id, minimum_importance=Importance.JOB_MESSAGE_WARNING
        )
    )
    again = jobs.ListMessages(
        jobs_pb2.ListMessagesRequest(job_id=job_id, page_token=every.next_page_token)
    )
    advance(stores.jobs, job_id, JobState.CANCELLED)
    after_end = jobs.ListMessages(
        jobs_pb2.ListMessagesRequest(job_id=job_id, page_token=every.next_page_token)
    )

    assert [m.message_text for m in every.messages] == ["debug", "warn", "error"]
    assert len({m.message_id for m in every.messages}) == 3 and not every.ended
    assert [m.message_text for m in important.messages] == ["warn", "error"]
    assert list(again.messages) == [] and again.next_page_token == every.next_page_token
    assert after_end.ended


@pytest.mark.parametrize(
    "call",
    [
        lambda jobs: jobs.GetJob(jobs_pb2.GetJobRequest(job_id="nope")),
        lambda jobs: jobs.ListMessages(jobs_pb2.ListMessagesRequest(job_id="nope")),
    ],
)
def test_an_unknown_job_is_not_found(stubs, call):
    assert _code(lambda: call(stubs[1])) == grpc.StatusCode.NOT_FOUND


def test_a_malformed_message_request_is_invalid_argument(stubs):
    job_api, jobs = stubs
    job_id = _prepare(job_api, "x")
    for token in ("-1", "abc", "9" * 13):
        request = jobs_pb2.ListMessagesRequest(job_id=job_id, page_token=token)
        assert _code(lambda r=request: jobs.ListMessages(r)) == grpc.StatusCode.INVALID_ARGUMENT
    unknown = jobs_pb2.ListMessagesRequest(job_id=job_id, minimum_importance=42)
    assert _code(lambda: jobs.ListMessages(unknown)) == grpc.StatusCode.INVALID_ARGUMENT
