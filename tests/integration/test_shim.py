"""The shim in process on port 0, with the real handlers behind the in-process invoker."""

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.domain.states import JobState
from tests.integration.conftest import pipeline_bytes
from tests.jobstates import advance

Enum = api.JobState.Enum


@pytest.fixture
def stub(channel):
    return job_api_pb2_grpc.JobServiceStub(channel)


def _prepare(stub, pipeline=None, name="wordcount"):
    options = struct_pb2.Struct()
    options.update({"beam:option:job_name:v1": name})
    response = stub.Prepare(
        api.PrepareJobRequest(
            pipeline=pipeline if pipeline is not None else pipeline_bytes(),
            pipeline_options=options,
            job_name="job",
        )
    )
    return response.preparation_id


def _code(call):
    with pytest.raises(grpc.RpcError) as raised:
        result = call()
        if hasattr(result, "__iter__"):
            list(result)
    return raised.value.code()


def test_health_reports_serving_and_reflection_lists_the_job_service(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "org.apache.beam.model.job_management.v1.JobService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    [answer] = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for s in answer.list_services_response.service}
    assert "org.apache.beam.model.job_management.v1.JobService" in names


def test_a_prepared_job_is_listed_with_its_name_and_state(stub):
    job_id = _prepare(stub)
    [info] = stub.GetJobs(api.GetJobsRequest()).job_info
    assert (info.job_id, info.job_name, info.state) == (job_id, "wordcount", Enum.STOPPED)
    assert dict(info.pipeline_options)["beam:option:job_name:v1"] == "wordcount"
    assert stub.GetState(api.GetJobStateRequest(job_id=job_id)).state == Enum.STOPPED


def test_a_50_megabyte_pipeline_is_accepted_and_returned_byte_for_byte(stub):
    big = pipeline_bytes(padding="p" * (50 * 1024 * 1024))
    job_id = _prepare(stub, big)
    assert stub.GetPipeline(api.GetJobPipelineRequest(job_id=job_id)).pipeline == big


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.Run(api.RunJobRequest(preparation_id="nope")),
        lambda s: s.GetState(api.GetJobStateRequest(job_id="nope")),
        lambda s: s.GetPipeline(api.GetJobPipelineRequest(job_id="nope")),
        lambda s: s.Cancel(api.CancelJobRequest(job_id="nope")),
        lambda s: s.Drain(api.DrainJobRequest(job_id="nope")),
        lambda s: s.GetJobMetrics(api.GetJobMetricsRequest(job_id="nope")),
        lambda s: s.GetStateStream(api.GetJobStateRequest(job_id="nope")),
        lambda s: s.GetMessageStream(api.JobMessagesRequest(job_id="nope")),
    ],
)
def test_unknown_ids_are_not_found_on_every_rpc_that_takes_one(stub, call):
    assert _code(lambda: call(stub)) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.Prepare(api.PrepareJobRequest()),
        lambda s: s.Prepare(api.PrepareJobRequest(pipeline=b"\x0a\xff\xff garbage")),
        lambda s: s.Run(api.RunJobRequest()),
        lambda s: s.GetState(api.GetJobStateRequest()),
        lambda s: s.Cancel(api.CancelJobRequest(job_id="x" * 1000)),
        lambda s: s.GetStateStream(api.GetJobStateRequest()),
        lambda s: s.GetMessageStream(api.JobMessagesRequest()),
    ],
)
def test_malformed_requests_are_invalid_arguments(stub, call):
    assert _code(lambda: call(stub)) == grpc.StatusCode.INVALID_ARGUMENT


def test_twenty_racing_runs_start_exactly_one_job(stub, stores, executor):
    job_id = _prepare(stub)

    def run(_):
        try:
            return stub.Run(api.RunJobRequest(preparation_id=job_id)).job_id
        except grpc.RpcError as error:
            return error.code()

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(run, range(20)))
    # Every Run answers the one job, which started once (one STARTING event); the executor
    # was asked to start that job, by the Runs that found it STARTING, and by nothing else.
    assert outcomes == [job_id] * 20
    assert [e.state for e in stores.jobs.events(job_id)] == [JobState.STOPPED, JobState.STARTING]
    assert set(executor.started) == {job_id}


def test_the_state_stream_sends_the_current_state_at_once_then_follows_to_the_end(stub, stores):
    job_id = _prepare(stub)
    stream = stub.GetStateStream(api.GetJobStateRequest(job_id=job_id))
    started = time.monotonic()
    assert next(stream).state == Enum.STOPPED
    assert time.monotonic() - started < 2
    for state in (JobState.STARTING, JobState.RUNNING, JobState.DONE):
        advance(stores.jobs, job_id, state)
    assert [e.state for e in stream] == [Enum.STARTING, Enum.RUNNING, Enum.DONE]


def test_the_message_stream_interleaves_messages_and_states_in_order(stub, stores):
    job_id = _prepare(stub)
    advance(stores.jobs, job_id, JobState.STARTING)
    advance(stores.jobs, job_id, JobState.RUNNING)
    Jobs(stores.jobs).say(job_id, [Message("JOB_MESSAGE_BASIC", "hello", 2.0)])
    cause = Message("JOB_MESSAGE_ERROR", "ValueError: the user's own words", 3.0)
    advance(stores.jobs, job_id, JobState.FAILED, messages=[cause])
    seen = []
    for response in stub.GetMessageStream(api.JobMessagesRequest(job_id=job_id)):
        if response.HasField("state_response"):
            seen.append(Enum.Name(response.state_response.state))
        else:
            seen.append(
                (
                    api.JobMessage.MessageImportance.Name(response.message_response.importance),
                    response.message_response.message_text,
                )
            )
    assert seen == [
        "STOPPED",
        "STARTING",
        "RUNNING",
        ("JOB_MESSAGE_BASIC", "hello"),
        ("JOB_MESSAGE_ERROR", "ValueError: the user's own words"),
        "FAILED",
    ]


def test_describe_pipeline_options(stub):
    options = stub.DescribePipelineOptions(api.DescribePipelineOptionsRequest()).options
    by_name = {o.name: o for o in options}
    assert by_name["job_timeout_seconds"].type == api.PipelineOptionType.INTEGER


def test_a_stream_with_a_deadline_before_run_is_refused_so_the_sdk_reopens_it_after(stub):
    # Given a prepared job, and streams opened as Beam's Python SDK opens them before Run
    job_id = _prepare(stub)
    request = api.GetJobStateRequest(job_id=job_id)
    messages = api.JobMessagesRequest(job_id=job_id)
    # Then with its deadline (--job_server_timeout) they are refused: they would end there
    assert _code(lambda: next(stub.GetStateStream(request, timeout=60))) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert _code(lambda: next(stub.GetMessageStream(messages, timeout=60))) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    # And without a deadline they replay at once, as they do with one once the job has run
    assert next(stub.GetStateStream(request)).state == Enum.STOPPED
    stub.Run(api.RunJobRequest(preparation_id=job_id))
    assert next(stub.GetStateStream(request, timeout=60)).state == Enum.STOPPED
