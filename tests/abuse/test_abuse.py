"""Hostile and mistaken requests, sent to a running server as a stranger (or a careless user)
would: each gets the status that names its problem and leaves nothing stored, and the server's
memory stays flat over the suite."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from beamjobs.api import artifact_api_pb2 as staging_api
from beamjobs.api import (
    artifact_api_pb2_grpc,
    job_api_pb2,
    job_api_pb2_grpc,
    jobs_pb2,
    pipeline_pb2,
)
from beamjobs.aws.dynamodb_store import DynamoJobStore
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.domain.worker_secrets import worker_secret_key
from beamjobs.local.embedded import LOCAL_TABLE
from beamjobs.pipeline.artifacts import FILE, STAGING_TO
from beamjobs.pipeline.environments import DOCKER, EMBEDDED
from tests.abuse.conftest import CLIENT_OPTIONS, REQUIRE_AUTH, MiB, PeakRss, rss_bytes

Code = grpc.StatusCode
# Growth allowed over the suite, after its first cases warmed the server up. Its largest
# message (200 MiB, refused) arrives whole in small buffers; the heap is trimmed after it, but
# pages the heap reuses count again (measured: 45 to 69 MiB in all).
RSS_GROWTH_BYTES = 96 * MiB
# Each server's RSS when its first case began, by its process id.
_baseline: dict[int, int] = {}


@pytest.fixture(autouse=True)
def _memory_baseline(server):
    _baseline.setdefault(server.pid, rss_bytes(server.pid))


def refused(call: Callable[[], Any], code: grpc.StatusCode, *, naming: str = "") -> str:
    with pytest.raises(grpc.RpcError) as error:
        call()
    assert error.value.code() == code, error.value.details()
    details = error.value.details() or ""
    assert naming in details, details
    return details


def pipeline(*, env_urn: str = EMBEDDED, payload: bytes = b"", dependencies=()):
    message = pipeline_pb2.Pipeline(root_transform_ids=["impulse"])
    message.components.transforms["impulse"].spec.urn = "beam:transform:impulse:v1"
    message.components.environments["py"].urn = env_urn
    message.components.environments["py"].payload = payload
    message.components.environments["py"].dependencies.extend(dependencies)
    return message


def artifact(path: str, staged_name: str, sha256: str = "") -> pipeline_pb2.ArtifactInformation:
    return pipeline_pb2.ArtifactInformation(
        type_urn=FILE,
        type_payload=pipeline_pb2.ArtifactFilePayload(path=path, sha256=sha256).SerializeToString(),
        role_urn=STAGING_TO,
        role_payload=pipeline_pb2.ArtifactStagingToRolePayload(
            staged_name=staged_name
        ).SerializeToString(),
    )


def prepare_request(
    message: Any = None, *, options: dict[str, Any] | None = None, job_name: str = "job"
) -> job_api_pb2.PrepareJobRequest:
    struct = struct_pb2.Struct()
    struct.update(options or {})
    body = message if isinstance(message, bytes) else (message or pipeline()).SerializeToString()
    return job_api_pb2.PrepareJobRequest(pipeline=body, pipeline_options=struct, job_name=job_name)


def option(name: str, value: Any) -> dict[str, Any]:
    return {f"beam:option:{name}:v1": value}


# -- Prepare -------------------------------------------------------------------------------------

no_root = pipeline_pb2.Pipeline()
no_root.components.environments["py"].urn = EMBEDDED
unknown_root = pipeline()
unknown_root.root_transform_ids.append("nowhere")

BAD_PREPARES = {
    "an empty pipeline": (prepare_request(b""), "no pipeline"),
    "random bytes": (prepare_request(b"\xff\xfe\x00garbage\x13"), "not a Beam Pipeline"),
    "a pipeline with no root transform": (prepare_request(no_root), "no root transforms"),
    "a root transform that is not there": (prepare_request(unknown_root), "'nowhere'"),
    "a job_name field over the bound": (prepare_request(job_name="é" * 251), "limit is 500"),
    "a job_name field with control characters": (
        prepare_request(job_name="job\x1b[2J"),
        "control",
    ),
    "a --job_name of 450 KB": (
        prepare_request(options=option("job_name", "n" * 450_000)),
        "limit is 500",
    ),
    "a --job_name that is a nested struct": (
        prepare_request(options=option("job_name", {"a": {"b": "c"}})),
        "must be a string",
    ),
    "a --job_name with control characters": (
        prepare_request(options=option("job_name", "evil\r\nname")),
        "control",
    ),
    **{
        f"a job timeout of {value}": (
            prepare_request(options=option("job_timeout_seconds", value)),
            "--job_timeout_seconds",
        )
        for value in ("nan", "inf", "1e309", "0.4", "-1")
    },
    "a worker vCPU count of inf": (
        prepare_request(options=option("worker_vcpu", "inf")),
        "--worker_vcpu",
    ),
    "10,000 dependencies": (
        prepare_request(
            pipeline(dependencies=[artifact(f"/f{i}", f"f{i}") for i in range(10_000)])
        ),
        "10000 dependencies; the limit is 1000",
    ),
    "a 100 KB environment URN": (
        prepare_request(pipeline(env_urn="beam:env:" + "x" * 100_000)),
        "the URN of environment 'py'",
    ),
    "a staged_name of ../../x": (
        prepare_request(pipeline(dependencies=[artifact("/tmp/a", "../../x")])),
        "plain file name",
    ),
    "a staged_name of /etc/cron.d/x": (
        prepare_request(pipeline(dependencies=[artifact("/tmp/a", "/etc/cron.d/x")])),
        "plain file name",
    ),
    "1,001 options": (
        prepare_request(options={f"beam:option:o{i}:v1": "v" for i in range(1001)}),
        "1001 pipeline options; the limit is 1000",
    ),
    "an engine that is not one": (
        prepare_request(options=option("beamjobs_engine", "spark")),
        "not an engine of this deployment: one of local",
    ),
    "an engine of 450 KB": (
        prepare_request(options=option("beamjobs_engine", "f" * 450_000)),
        "not an engine of this deployment",
    ),
    "an engine that is a nested struct": (
        prepare_request(options=option("beamjobs_engine", {"a": ["b"]})),
        "not an engine of this deployment",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PREPARES))
def test_a_malformed_prepare_is_invalid_argument(server, unchanged, case):
    request, naming = BAD_PREPARES[case]
    refused(lambda: server.jobs.Prepare(request), Code.INVALID_ARGUMENT, naming=naming)


def test_a_streaming_pipeline_with_no_engine_for_it_is_refused_before_anything_is_stored(
    server, unchanged
):
    streaming = pipeline()
    streaming.components.pcollections["out"].is_bounded = pipeline_pb2.IsBounded.UNBOUNDED
    request = prepare_request(streaming)
    refused(
        lambda: server.jobs.Prepare(request), Code.FAILED_PRECONDITION, naming="--beamjobs_engine"
    )


def test_every_problem_of_a_prepare_is_reported_at_once(server, unchanged):
    request = prepare_request(
        unknown_root,
        options={**option("job_timeout_seconds", "nan"), **option("job_name", 7)},
        job_name="\x00",
    )
    details = refused(lambda: server.jobs.Prepare(request), Code.INVALID_ARGUMENT)
    for problem in ("job_name holds control", "--job_name must be a string", "'nowhere'"):
        assert problem in details
    assert "--job_timeout_seconds must be a finite number" in details


OVER_QUOTA = {
    "a worker above the vCPU quota": (
        prepare_request(options={**option("worker_vcpu", "4"), **option("worker_memory_mb", 8192)}),
        "worker vCPUs is 2",
    ),
    "a worker above the memory quota": (
        prepare_request(
            options={**option("worker_vcpu", "2"), **option("worker_memory_mb", 16384)}
        ),
        "worker memory (MiB) is 8192",
    ),
    "a DOCKER image not allowed": (
        prepare_request(
            pipeline(
                env_urn=DOCKER,
                payload=pipeline_pb2.DockerPayload(
                    container_image="evil.example/miner:latest"
                ).SerializeToString(),
            )
        ),
        "DOCKER images allowed are apache/beam_*",
    ),
}


@pytest.mark.parametrize("case", list(OVER_QUOTA))
def test_a_prepare_over_a_quota_is_resource_exhausted(server, unchanged, case):
    request, naming = OVER_QUOTA[case]
    refused(lambda: server.jobs.Prepare(request), Code.RESOURCE_EXHAUSTED, naming=naming)


def test_a_message_over_the_servers_ceiling_is_refused_before_it_is_read(server, unchanged):
    request = prepare_request(b"\x0a" + b"x" * (256 * MiB + 1))
    refused(lambda: server.jobs.Prepare(request), Code.RESOURCE_EXHAUSTED, naming="larger than max")


@pytest.mark.parametrize("server", [REQUIRE_AUTH], indirect=True)
def test_unproven_calls_are_refused_before_their_200_mib_are_read(server, unchanged):
    request = prepare_request(b"\x0a" + b"x" * (200 * MiB))
    before = rss_bytes(server.pid)
    peak = PeakRss(server.pid)
    with grpc.insecure_channel(server.endpoint, options=CLIENT_OPTIONS) as stranger:
        prepare = job_api_pb2_grpc.JobServiceStub(stranger).Prepare
        with peak, ThreadPoolExecutor(4) as calls:
            outcomes = list(calls.map(lambda _: _status(lambda: prepare(request)), range(4)))
    assert [code for code, _ in outcomes] == [Code.UNAUTHENTICATED] * 4, outcomes
    assert peak.bytes - before <= 64 * MiB, f"the server grew by {(peak.bytes - before) / MiB} MiB"


def test_large_requests_are_received_a_few_at_a_time_per_connection_and_address(server):
    """Prepares whose message has not (yet) come hold their slot, as a 256 MiB one arriving
    slowly would: two per connection, four per address; then others are refused unread."""
    prepare = "/" + job_api_pb2.DESCRIPTOR.services_by_name["JobService"].full_name + "/Prepare"
    waiting: list[grpc.Future] = []
    never = threading.Event()
    with contextlib.ExitStack() as channels:
        channels.callback(never.set)  # (last: the calls' request threads end)

        def connection() -> grpc.Channel:
            own = [*CLIENT_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]  # its own TCP
            return channels.enter_context(grpc.insecure_channel(server.endpoint, options=own))

        def unsent(channel: grpc.Channel) -> None:
            requests = iter(never.wait, True)  # none, until the test ends
            call = channel.stream_unary(prepare).future(requests, metadata=server.metadata())
            waiting.append(call)
            channels.callback(call.cancel)

        def prepare_on(channel: grpc.Channel) -> tuple[grpc.StatusCode, str]:
            stub = job_api_pb2_grpc.JobServiceStub(channel)
            return _status(lambda: stub.Prepare(prepare_request(), metadata=server.metadata()))

        first, second, third = connection(), connection(), connection()
        unsent(first)
        unsent(first)
        time.sleep(1)  # (the server has the calls)
        code, details = prepare_on(first)
        assert code == Code.RESOURCE_EXHAUSTED and "on one connection" in details, details
        assert prepare_on(second)[0] == Code.OK
        unsent(second)
        unsent(second)
        time.sleep(1)
        code, details = prepare_on(third)
        assert code == Code.RESOURCE_EXHAUSTED and "from one address" in details, details
        waiting.pop().cancel()
        time.sleep(1)
        assert prepare_on(third)[0] == Code.OK


def _status(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details()
    return Code.OK, ""


def test_a_unary_request_over_its_methods_limit_is_invalid_argument(server, unchanged):
    request = job_api_pb2.GetJobStateRequest(job_id="j" * 100_000)
    refused(lambda: server.jobs.GetState(request), Code.INVALID_ARGUMENT, naming="limit is 65536")


# -- ids -----------------------------------------------------------------------------------------

BAD_IDS = {
    "empty": "",
    "201 characters": "j" * 201,
    "a path": "../../etc/passwd",
    "a key separator": "job#x",
    "a NUL": "job\x00x",
    "a right-to-left override": "job\u202ex",
}
ID_CALLS = {
    "GetState": lambda s, i: s.jobs.GetState(job_api_pb2.GetJobStateRequest(job_id=i)),
    "GetJob": lambda s, i: s.beamjobs.GetJob(jobs_pb2.GetJobRequest(job_id=i)),
    "ListMessages": lambda s, i: s.beamjobs.ListMessages(jobs_pb2.ListMessagesRequest(job_id=i)),
    "Cancel": lambda s, i: s.jobs.Cancel(job_api_pb2.CancelJobRequest(job_id=i)),
    "Run": lambda s, i: s.jobs.Run(job_api_pb2.RunJobRequest(preparation_id=i)),
    "GetMessageStream": lambda s, i: next(
        s.jobs.GetMessageStream(job_api_pb2.JobMessagesRequest(job_id=i))
    ),
}


@pytest.mark.parametrize("rpc", list(ID_CALLS))
@pytest.mark.parametrize("bad", list(BAD_IDS))
def test_a_malformed_job_id_is_invalid_argument(server, unchanged, rpc, bad):
    refused(lambda: ID_CALLS[rpc](server, BAD_IDS[bad]), Code.INVALID_ARGUMENT)


# -- listings --------------------------------------------------------------------------------------

BAD_LISTINGS = {
    "a page of 1,001": jobs_pb2.ListJobsRequest(page_size=1001),
    "a negative page": jobs_pb2.ListJobsRequest(page_size=-5),
    "a made-up token": jobs_pb2.ListJobsRequest(page_token="eyJhZnRlciI6ICJ4In0="),
    "a token of 50 KB": jobs_pb2.ListJobsRequest(page_token="A" * 50_000),
    "a name prefix of 600 bytes": jobs_pb2.ListJobsRequest(name_prefix="é" * 300),
    "a state that is not one": jobs_pb2.ListJobsRequest(states=[1234]),
    "a time before 1970": jobs_pb2.ListJobsRequest(created_after={"seconds": -100}),
    "a time after 2286": jobs_pb2.ListJobsRequest(created_before={"seconds": 10**11}),
}


@pytest.mark.parametrize("case", list(BAD_LISTINGS))
def test_a_malformed_listing_is_invalid_argument(server, unchanged, case):
    refused(lambda: server.beamjobs.ListJobs(BAD_LISTINGS[case]), Code.INVALID_ARGUMENT)


def test_a_malformed_message_listing_is_invalid_argument(server, unchanged):
    for request in (
        jobs_pb2.ListMessagesRequest(job_id="j", page_token="12a"),
        jobs_pb2.ListMessagesRequest(job_id="j", minimum_importance=77),
    ):
        refused(lambda r=request: server.beamjobs.ListMessages(r), Code.INVALID_ARGUMENT)


# -- staging -------------------------------------------------------------------------------------

Answer = Callable[[staging_api.ArtifactRequestWrapper], list[Any]]


def stage(channel: grpc.Channel, first: staging_api.ArtifactResponseWrapper, answer: Answer):
    """Play the SDK's side of staging: `first`, then for each request the responses `answer`
    gives. The stream stays open until the server ends it (an answer that leaves out the
    last chunk goes silent)."""
    stub = artifact_api_pb2_grpc.ArtifactStagingServiceStub(channel)
    responses: queue.Queue[Any] = queue.Queue()
    responses.put(first)
    stop = threading.Event()

    def sent() -> Iterator[Any]:
        while not stop.is_set():
            try:
                yield responses.get(timeout=0.1)
            except queue.Empty:
                continue

    try:
        for request in stub.ReverseArtifactRetrievalService(sent()):
            for response in answer(request):
                responses.put(response)
    finally:
        stop.set()


def token_of(prepared: job_api_pb2.PrepareJobResponse) -> staging_api.ArtifactResponseWrapper:
    return staging_api.ArtifactResponseWrapper(staging_token=prepared.staging_session_token)


def resolve_unchanged(request):
    return [
        staging_api.ArtifactResponseWrapper(
            resolve_artifact_response=staging_api.ResolveArtifactsResponse(
                replacements=request.resolve_artifact.artifacts
            )
        )
    ]


def send(data: bytes, chunk: int = 2 * MiB, *, last: bool = True):
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    responses = [
        staging_api.ArtifactResponseWrapper(
            get_artifact_response=staging_api.GetArtifactResponse(data=piece)
        )
        for piece in pieces
    ]
    if last:
        responses.append(
            staging_api.ArtifactResponseWrapper(
                get_artifact_response=staging_api.GetArtifactResponse(), is_last=True
            )
        )
    return responses


def sdk(data: bytes = b"", *, chunk: int = 2 * MiB, last: bool = True, resolve=None) -> Answer:
    """An SDK that resolves dependencies with `resolve` (unchanged by default) and sends
    `data` for each artifact asked for, in `chunk`s (all but the last, unless `last`)."""

    def answer(request):
        if request.HasField("resolve_artifact"):
            return (resolve or resolve_unchanged)(request)
        return send(data, chunk, last=last)

    return answer


@pytest.fixture
def prepared(server):
    """A job prepared with one dependency to stage, as a user's SDK prepares it."""
    request = prepare_request(
        pipeline(dependencies=[artifact("/home/me/pkg.tar.gz", "pkg.tar.gz")])
    )
    return server.jobs.Prepare(request)


def test_bytes_that_do_not_match_their_declared_sha256_are_invalid_argument(server):
    declared = hashlib.sha256(b"what was promised").hexdigest()
    prepared = server.jobs.Prepare(
        prepare_request(pipeline(dependencies=[artifact("/a", "a.whl", declared)]))
    )
    before = server.storage.snapshot()
    answer = sdk(b"something else")
    refused(
        lambda: stage(server.channel, token_of(prepared), answer),
        Code.INVALID_ARGUMENT,
        naming="declares",
    )
    _only_staging_records_changed(server, before)


def test_an_artifact_over_the_jobs_quota_is_resource_exhausted(server, prepared):
    before = server.storage.snapshot()
    answer = sdk(b"x" * (17 * MiB))
    refused(
        lambda: stage(server.channel, token_of(prepared), answer),
        Code.RESOURCE_EXHAUSTED,
        naming="artifact bytes per job is 16777216",
    )
    _only_staging_records_changed(server, before)


def test_a_200_mib_chunk_is_invalid_argument(server, prepared):
    before = server.storage.snapshot()
    answer = sdk(b"x" * (200 * MiB), chunk=200 * MiB)
    refused(
        lambda: stage(server.channel, token_of(prepared), answer),
        Code.INVALID_ARGUMENT,
        naming="limit is 8388608",
    )
    _only_staging_records_changed(server, before)


@pytest.mark.parametrize("name", ["../../x", "/etc/cron.d/x", "a\\b", ".."])
def test_a_resolution_to_a_staged_name_that_is_not_a_file_name_is_invalid_argument(
    server, prepared, name
):
    def renamed(request):
        [reply] = resolve_unchanged(request)
        for replacement in reply.resolve_artifact_response.replacements:
            replacement.role_payload = pipeline_pb2.ArtifactStagingToRolePayload(
                staged_name=name
            ).SerializeToString()
        return [reply]

    before = server.storage.snapshot()
    refused(
        lambda: stage(server.channel, token_of(prepared), sdk(resolve=renamed)),
        Code.INVALID_ARGUMENT,
        naming="plain file name",
    )
    _only_staging_records_changed(server, before)


def test_a_session_stalled_past_the_idle_limit_ends_and_its_upload_is_aborted(server, prepared):
    # 10 MiB sent (past one 8 MiB part: a multipart upload is open), then silence.
    before = server.storage.snapshot()
    answer = sdk(b"y" * (10 * MiB), last=False)
    refused(
        lambda: stage(server.channel, token_of(prepared), answer),
        Code.DEADLINE_EXCEEDED,
        naming="idle limit",
    )
    _only_staging_records_changed(server, before)


def test_end_of_stream_as_the_first_message_is_invalid_argument(server, unchanged):
    stub = server.staging
    refused(
        lambda: list(stub.ReverseArtifactRetrievalService(iter(()))),
        Code.INVALID_ARGUMENT,
        naming="staging token",
    )


def test_a_response_of_the_wrong_kind_is_invalid_argument(server, prepared):
    before = server.storage.snapshot()
    refused(
        lambda: stage(server.channel, token_of(prepared), lambda request: send(b"z")),
        Code.INVALID_ARGUMENT,
        naming="expected resolve_artifact_response",
    )
    _only_staging_records_changed(server, before)


SECRET = "s" * 43  # the shape of a minted secret


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("", Code.INVALID_ARGUMENT),
        ("no-separator", Code.INVALID_ARGUMENT),
        ("job.short-secret", Code.INVALID_ARGUMENT),
        (f"../../etc.{SECRET}", Code.INVALID_ARGUMENT),
        (f"no-such-job.{SECRET}", Code.NOT_FOUND),
    ],
)
def test_a_made_up_staging_token_is_refused(server, unchanged, token, code):
    first = staging_api.ArtifactResponseWrapper(staging_token=token)
    refused(lambda: stage(server.channel, first, sdk()), code)


def test_a_real_job_with_a_guessed_secret_is_not_found(server, prepared):
    before = server.storage.snapshot()
    first = staging_api.ArtifactResponseWrapper(staging_token=f"{prepared.preparation_id}.{SECRET}")
    refused(lambda: stage(server.channel, first, sdk()), Code.NOT_FOUND)
    assert server.storage.snapshot() == before


def _only_staging_records_changed(server, before):
    """A refused staging session stores no artifact and leaves no upload open. (Its job
    records the session's end, a pipeline and an event, so that its client may stage again;
    the shim may record it just after the refusal reaches the client, so the storage is read
    once it has stopped changing, lest the record land in the next test's window.)"""
    after = server.storage.snapshot()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.3)
        again, after = after, server.storage.snapshot()
        if again == after:
            break
    new = {key for key, _ in after["objects"] - before["objects"]}
    assert all(key.startswith("pipelines/") for key in new), f"stored: {new}"
    assert not after["uploads"], "a multipart upload was left open"


# -- streams -------------------------------------------------------------------------------------


def test_ten_thousand_streams_on_one_connection_get_the_quota_and_no_more(server):
    job_id = _a_job(server)
    before = server.storage.snapshot()

    async def storm() -> tuple[int, int, set[str]]:
        async with grpc.aio.insecure_channel(server.endpoint, options=CLIENT_OPTIONS) as channel:
            stub = job_api_pb2_grpc.JobServiceStub(channel)
            metadata = server.metadata()
            calls = [
                stub.GetStateStream(
                    job_api_pb2.GetJobStateRequest(job_id=job_id), metadata=metadata
                )
                for _ in range(10_000)
            ]

            async def first(call) -> str:
                try:
                    await call.read()
                    return "open"
                except grpc.aio.AioRpcError as error:
                    return f"{error.code().name}: {error.details()}"

            outcomes = await asyncio.wait_for(asyncio.gather(*map(first, calls)), 120)
            for call in calls:
                call.cancel()
        opened = sum(o == "open" for o in outcomes)
        return opened, len(outcomes) - opened, {o for o in outcomes if o != "open"}

    opened, refused_count, reasons = asyncio.run(storm())
    assert opened == 64
    assert refused_count == 10_000 - 64
    # Refused by the quota, or by HTTP/2 itself (REFUSED_STREAM, code 7) when the client
    # opened more than the connection's 100 at once.
    quota = "RESOURCE_EXHAUSTED: quota exceeded: open streams is 64 per principal (64 open)"
    transport = "UNAVAILABLE: Stream removed (RST_STREAM (Received RST_STREAM with error code 7))"
    assert quota in reasons and reasons <= {quota, transport}, reasons
    assert server.storage.snapshot() == before


def test_a_subscriber_that_never_reads_holds_the_server_to_bounded_memory(server):
    job_id = _a_job(server)
    store = DynamoJobStore(server.storage.dynamodb, LOCAL_TABLE, item_lifetime=3600)
    call = server.jobs.GetMessageStream(job_api_pb2.JobMessagesRequest(job_id=job_id))
    next(call)  # subscribed; from now on, never read
    batch = [Message("JOB_MESSAGE_BASIC", "m" * 90_000, float(i)) for i in range(12)]

    def flood() -> None:  # 21 MB of messages, a megabyte at a time
        for _ in range(20):
            Jobs(store).say(job_id, batch)
        time.sleep(3)

    # Measured over a second flood: the first touches again heap pages that earlier cases'
    # trims gave back, which counts in RSS without being held.
    flood()
    before = rss_bytes(server.pid)
    flood()
    grew = rss_bytes(server.pid) - before
    call.cancel()
    assert grew < 32 * MiB, grew


def _a_job(server) -> str:
    return server.jobs.Prepare(prepare_request()).preparation_id


# -- after Run -----------------------------------------------------------------------------------


def test_staging_after_run_is_refused(server):
    prepared = server.jobs.Prepare(prepare_request())
    stage(server.channel, token_of(prepared), sdk())
    job_id = prepared.preparation_id
    server.jobs.Run(job_api_pb2.RunJobRequest(preparation_id=job_id))
    _until_ended(server, job_id)  # (its worker runs it, and stores what it does)
    before = server.storage.snapshot()
    refused(
        lambda: stage(server.channel, token_of(prepared), sdk()),
        Code.FAILED_PRECONDITION,
        naming="staged before Run",
    )
    assert server.storage.snapshot() == before


def _until_ended(server, job_id: str) -> None:
    """Until the job ended and its last write is done: its worker's secret is deleted just
    after its terminal state is recorded."""
    ended = {job_api_pb2.JobState.DONE, job_api_pb2.JobState.FAILED}
    deadline = time.monotonic() + 60
    while server.jobs.GetState(job_api_pb2.GetJobStateRequest(job_id=job_id)).state not in ended:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    secret = worker_secret_key(job_id)
    while any(key == secret for key, _ in server.storage.snapshot()["objects"]):
        assert time.monotonic() < deadline, f"{secret} is still stored"
        time.sleep(0.2)


# -- direct Lambda events ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def functions(server):
    """The Lambda functions' handlers, in this process, on the server's AWS."""
    import os

    names = {
        "BEAMJOBS_TABLE": LOCAL_TABLE,
        "BEAMJOBS_BUCKET": "beamjobs-artifacts",
        "AWS_ENDPOINT_URL": server.aws_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "embedded",
        "AWS_SECRET_ACCESS_KEY": "embedded",
        "BEAMJOBS_WARM_WORKERS": "0",
        # With a warm pool: the worker function takes offers for this role's tasks.
        "BEAMJOBS_WARM_POOL_ROLE": POOL_ROLE,
        # The handlers' key for callers (this process's own: what the shim signs with is not
        # the business of whoever else invokes them).
        "BEAMJOBS_CALLER_KEY": "abuse-suite-handlers-key",
    }
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    from beamjobs import runtime
    from beamjobs.local.invoker import LocalContext
    from beamjobs.settings import Settings
    from tests.integration.conftest import RecordingExecutor

    # Nothing is run here: the server's executor serves its own process's workers.
    runtime.install_executor(Settings.from_env(), RecordingExecutor())
    from beamjobs_functions.control.app import lambda_handler as control
    from beamjobs_functions.query.app import lambda_handler as query
    from beamjobs_functions.worker.app import lambda_handler as worker

    yield {"control": control, "query": query, "worker": worker}, LocalContext
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.mark.parametrize("function", ["control", "query", "worker"])
@pytest.mark.parametrize(
    "event", [[], "x", {}, {"rpc": "__class__"}, {"rpc": "Prepare", "request_id": 1}]
)
def test_a_malformed_lambda_event_is_answered_invalid_argument(
    functions, unchanged, function, event
):
    handlers, context = functions
    answer = handlers[function](event, context(function_name=function))
    assert answer["error"]["code"] == "INVALID_ARGUMENT", answer


@pytest.mark.parametrize("function", ["control", "query"])
def test_an_event_whose_caller_the_shim_did_not_sign_is_unauthenticated(
    functions, unchanged, function
):
    handlers, context = functions
    rpc = {"control": "Prepare", "query": "GetJobs"}[function]
    admin = {"principal": "arn:aws:iam::123456789012:user/mallory", "admin": True}
    event = {"rpc": rpc, "request_id": "forged", "caller": admin, "request": {}}
    for forged in (event, {**event, "caller_signature": "0" * 64}):
        answer = handlers[function](forged, context(function_name=function))
        assert answer["error"]["code"] == "UNAUTHENTICATED", answer


POOL_ROLE = "arn:aws:iam::123456789012:role/beamjobs-warm-pool"


def _forged_proof(server) -> str:
    """A well-formed proof for the worker channel, signed with a key the AWS does not know."""
    from botocore.credentials import ReadOnlyCredentials

    from beamjobs.aws.signed_identity import WORKER_CHANNEL, sign, sts_url

    return sign(
        ReadOnlyCredentials("AKIAFORGEDFORGED0000", "forged", None),
        region="us-east-1",
        url=sts_url("us-east-1", server.aws_endpoint),
        deployment=WORKER_CHANNEL,
    )


@pytest.mark.parametrize(
    "request_, code",
    [
        ({}, "INVALID_ARGUMENT"),
        ({"job_id": 7, "task_token": "t", "proof": "p"}, "INVALID_ARGUMENT"),
        ({"job_id": "j", "task_token": "t" * 5000, "proof": "p"}, "INVALID_ARGUMENT"),
        ({"job_id": "j", "task_token": "t", "proof": "not a proof"}, "UNAUTHENTICATED"),
        ({"job_id": "j", "task_token": "t", "proof": "x" * 100_000}, "UNAUTHENTICATED"),
        ({"job_id": "j", "task_token": "t", "proof": "forged"}, "UNAUTHENTICATED"),
    ],
)
def test_a_hostile_take_of_an_offered_job_is_refused_and_nothing_is_taken(
    server, functions, unchanged, request_, code
):
    handlers, context = functions
    if request_.get("proof") == "forged":
        request_ = {**request_, "proof": _forged_proof(server)}
    event = {"rpc": "TakeOffer", "request_id": f"take-{code}", "request": request_}
    answer = handlers["worker"](event, context(function_name="worker"))
    assert answer["error"]["code"] == code, answer


# -- a flood, and the memory over the suite (last) -----------------------------------------------


def test_a_flood_of_prepares_from_one_principal_meets_its_quota(server):
    # The quota counts per clock minute: start early in one, so that the refusal and the call
    # after it fall in the same minute.
    if time.time() % 60 > 30:
        time.sleep(60 - time.time() % 60)
    accepted = 0
    for _ in range(200):
        try:
            server.jobs.Prepare(prepare_request())
        except grpc.RpcError as error:
            assert error.code() == Code.RESOURCE_EXHAUSTED, error.details()
            assert "Prepares per minute is 40" in error.details()
            break
        accepted += 1
    else:
        pytest.fail("200 Prepares in a row were all accepted")
    assert accepted <= 80  # the quota, in at most two minutes
    before = server.storage.snapshot()
    refused(lambda: server.jobs.Prepare(prepare_request()), Code.RESOURCE_EXHAUSTED)
    assert server.storage.snapshot() == before


def test_the_servers_memory_stayed_flat_over_the_suite(server):
    grew = rss_bytes(server.pid) - _baseline[server.pid]
    assert grew < RSS_GROWTH_BYTES, f"the server grew by {grew / MiB:.0f} MiB"
