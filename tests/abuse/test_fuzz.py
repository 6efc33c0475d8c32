"""Generated requests to every RPC of a running server: whatever they hold, none is answered
INTERNAL or UNKNOWN, and the server keeps serving. CI runs a fixed seed and budget
(BEAMJOBS_FUZZ_EXAMPLES requests, 10,000); `make fuzz` runs more."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beamjobs.api import artifact_api_pb2 as staging_api
from beamjobs.api import job_api_pb2 as api
from beamjobs.api import jobs_pb2, pipeline_pb2
from beamjobs.pipeline.environments import DOCKER, EMBEDDED, EXTERNAL
from tests.abuse.conftest import OPEN

# Against the server without authentication: behind it, an authenticating one serves the same
# code (and the abuse cases run against both).
pytestmark = pytest.mark.parametrize("server", [OPEN], indirect=True)

EXAMPLES = int(os.environ.get("BEAMJOBS_FUZZ_EXAMPLES", "10000"))
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# Each call's deadline: long enough for any answer, short enough for a stream left open.
DEADLINE_SECONDS = 5.0

ids = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="abcdef0123456789-._#/", min_size=190, max_size=210),
    st.sampled_from(["", "../../etc/passwd", "job\x00x", "a" * 201, "job\u202e"]),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=4,
)
option_names = st.sampled_from(
    ["job_name", "job_timeout_seconds", "worker_vcpu", "worker_memory_mb", "runner", "x"]
)
option_values = st.one_of(
    json_values, st.sampled_from(["nan", "inf", "-1", "0.4", "1e309", "16", "0.25", "512"])
)
options = st.dictionaries(
    st.one_of(option_names.map(lambda n: f"beam:option:{n}:v1"), st.text(max_size=20)),
    option_values,
    max_size=6,
)


@st.composite
def pipelines(draw) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    message = pipeline_pb2.Pipeline()
    for transform in draw(st.lists(st.text(max_size=10), max_size=3)):
        message.components.transforms[transform].spec.urn = draw(st.text(max_size=20))
    message.root_transform_ids.extend(draw(st.lists(st.text(max_size=10), max_size=3)))
    for env in draw(st.lists(st.text(max_size=6), max_size=2)):
        message.components.environments[env].urn = draw(
            st.sampled_from([EMBEDDED, EXTERNAL, DOCKER, ""]) | st.text(max_size=20)
        )
        message.components.environments[env].payload = draw(st.binary(max_size=40))
        for _ in range(draw(st.integers(0, 2))):
            message.components.environments[env].dependencies.add(
                type_urn=draw(st.text(max_size=30)),
                type_payload=draw(st.binary(max_size=40)),
                role_urn=draw(st.sampled_from(["beam:artifact:role:staging_to:v1", ""])),
                role_payload=draw(st.binary(max_size=40)),
            )
    return message.SerializeToString()


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def staging_messages(draw) -> list[staging_api.ArtifactResponseWrapper]:
    first = staging_api.ArtifactResponseWrapper(staging_token=draw(st.text(max_size=80)))
    rest = [
        staging_api.ArtifactResponseWrapper(
            get_artifact_response=staging_api.GetArtifactResponse(
                data=draw(st.binary(max_size=64))
            ),
            is_last=draw(st.booleans()),
        )
        for _ in range(draw(st.integers(0, 2)))
    ]
    return [first, *rest] if draw(st.booleans()) else rest


def _first(stream: Any) -> None:
    for _ in stream:
        return


@st.composite
def calls(draw) -> tuple[str, Callable[[Any], Any]]:
    rpc = draw(
        st.sampled_from(
            [
                "Prepare",
                "Run",
                "GetJobs",
                "GetState",
                "GetPipeline",
                "Cancel",
                "Drain",
                "GetJobMetrics",
                "DescribePipelineOptions",
                "GetStateStream",
                "GetMessageStream",
                "ReverseArtifactRetrievalService",
                "ListJobs",
                "GetJob",
                "ListMessages",
            ]
        )
    )
    job_id = draw(ids)
    t = DEADLINE_SECONDS
    if rpc == "Prepare":
        request = api.PrepareJobRequest(
            pipeline=draw(pipelines()),
            pipeline_options=_struct(draw(options)),
            job_name=draw(st.text(max_size=40)),
        )
        return rpc, lambda s: s.jobs.Prepare(request, timeout=t)
    if rpc == "Run":
        return rpc, lambda s: s.jobs.Run(api.RunJobRequest(preparation_id=job_id), timeout=t)
    if rpc in ("GetJobs", "DescribePipelineOptions"):
        empty = api.GetJobsRequest() if rpc == "GetJobs" else api.DescribePipelineOptionsRequest()
        return rpc, lambda s: getattr(s.jobs, rpc)(empty, timeout=t)
    if rpc in ("GetState", "GetPipeline", "GetJobMetrics"):
        requests = {
            "GetState": api.GetJobStateRequest,
            "GetPipeline": api.GetJobPipelineRequest,
            "GetJobMetrics": api.GetJobMetricsRequest,
        }
        request = requests[rpc](job_id=job_id)
        return rpc, lambda s: getattr(s.jobs, rpc)(request, timeout=t)
    if rpc in ("Cancel", "Drain"):
        request = (api.CancelJobRequest if rpc == "Cancel" else api.DrainJobRequest)(job_id=job_id)
        return rpc, lambda s: getattr(s.jobs, rpc)(request, timeout=t)
    if rpc in ("GetStateStream", "GetMessageStream"):
        request = (
            api.GetJobStateRequest(job_id=job_id)
            if rpc == "GetStateStream"
            else api.JobMessagesRequest(job_id=job_id)
        )
        return rpc, lambda s: _first(getattr(s.jobs, rpc)(request, timeout=t))
    if rpc == "ListJobs":
        listing = jobs_pb2.ListJobsRequest(
            states=draw(st.lists(st.integers(-1, 12), max_size=3)),
            name_prefix=draw(st.text(max_size=40)),
            owner=draw(st.sampled_from(["", "local", "arn:aws:iam::1:user/x"])),
            page_size=draw(st.integers(-10, 1100)),
            page_token=draw(st.one_of(st.just(""), st.text(max_size=60))),
        )
        return rpc, lambda s: s.beamjobs.ListJobs(listing, timeout=t)
    if rpc == "GetJob":
        return rpc, lambda s: s.beamjobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=t)
    if rpc == "ListMessages":
        messages_request = jobs_pb2.ListMessagesRequest(
            job_id=job_id,
            minimum_importance=draw(st.integers(0, 9)),
            page_token=draw(st.one_of(st.just(""), st.text(max_size=20))),
        )
        return rpc, lambda s: s.beamjobs.ListMessages(messages_request, timeout=t)
    messages = staging_messages(draw)
    return rpc, lambda s: _first(
        s.staging.ReverseArtifactRetrievalService(iter(messages), timeout=t)
    )


# Requests go in batches of BATCH per example: the requests counted are EXAMPLES, and
# Hypothesis's own work per request is a tenth.
BATCH = 10


@settings(
    max_examples=EXAMPLES // BATCH,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(calls(), min_size=BATCH, max_size=BATCH))
def _answers_every_call_with_a_status_of_its_own(server, batch):
    # A batch's requests go at once, as many clients' would.
    answers = _SENDERS.map(lambda call: _answer(server, call[1]), batch)
    for (rpc, _), (code, details) in zip(batch, answers, strict=True):
        assert code not in NEVER, f"{rpc}: {code} {details}"


_SENDERS = ThreadPoolExecutor(BATCH)


def _answer(server, send) -> tuple[grpc.StatusCode, str]:
    try:
        send(server)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def test_no_generated_request_is_answered_internal_or_unknown(server):
    _answers_every_call_with_a_status_of_its_own(server)
    health = health_pb2_grpc.HealthStub(server.channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
