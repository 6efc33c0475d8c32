"""Artifact staging through the shim, driven by a client that plays the SDK's side of Beam's
reverse-retrieval protocol (the real SDK does the same in tests/e2e)."""

import dataclasses
import datetime
import hashlib
import logging
import os
import queue
import time

import grpc
import pytest
from google.protobuf import struct_pb2

from beamjobs.api import artifact_api_pb2 as artifacts_api
from beamjobs.api import artifact_api_pb2_grpc, job_api_pb2, job_api_pb2_grpc, pipeline_pb2
from beamjobs.aws.artifact_store import INCOMING_PREFIX
from beamjobs.domain.staging_tokens import mint
from beamjobs.domain.staging_tokens import token as staging_token
from beamjobs.pipeline.artifacts import ARTIFACT_PREFIX, FILE, STAGING_TO
from tests.integration.conftest import running_shim

CHUNK = 2 * 1024 * 1024


def _artifact(path, staged_name, sha256=""):
    return pipeline_pb2.ArtifactInformation(
        type_urn=FILE,
        type_payload=pipeline_pb2.ArtifactFilePayload(path=path, sha256=sha256).SerializeToString(),
        role_urn=STAGING_TO,
        role_payload=pipeline_pb2.ArtifactStagingToRolePayload(
            staged_name=staged_name
        ).SerializeToString(),
    )


def _pipeline(*dependencies):
    pipeline = pipeline_pb2.Pipeline(root_transform_ids=["impulse"])
    pipeline.components.transforms["impulse"].spec.urn = "beam:transform:impulse:v1"
    pipeline.components.environments["py"].urn = "beam:env:embedded_python:v1"
    pipeline.components.environments["py"].dependencies.extend(dependencies)
    return pipeline.SerializeToString()


class FakeSdk:
    """The SDK's side of staging: answers resolve requests unchanged and sends each file's
    bytes in 2 MiB chunks, as Beam's Python SDK does. `files` maps paths to their bytes."""

    def __init__(self, channel, files):
        self._stub = artifact_api_pb2_grpc.ArtifactStagingServiceStub(channel)
        self._files = files
        self.sent_paths = []

    def offer(self, token, *, hang_up_after_bytes=None):
        responses = queue.Queue()
        responses.put(artifacts_api.ArtifactResponseWrapper(staging_token=token))
        call = self._stub.ReverseArtifactRetrievalService(iter(responses.get, None))
        sent = 0
        try:
            for request in call:
                if request.HasField("resolve_artifact"):
                    responses.put(
                        artifacts_api.ArtifactResponseWrapper(
                            resolve_artifact_response=artifacts_api.ResolveArtifactsResponse(
                                replacements=request.resolve_artifact.artifacts
                            )
                        )
                    )
                    continue
                payload = pipeline_pb2.ArtifactFilePayload.FromString(
                    request.get_artifact.artifact.type_payload
                )
                self.sent_paths.append(payload.path)
                data = self._files[payload.path]
                for start in range(0, len(data), CHUNK):
                    if hang_up_after_bytes is not None and sent >= hang_up_after_bytes:
                        call.cancel()
                        return
                    responses.put(
                        artifacts_api.ArtifactResponseWrapper(
                            get_artifact_response=artifacts_api.GetArtifactResponse(
                                data=data[start : start + CHUNK]
                            )
                        )
                    )
                    sent += len(data[start : start + CHUNK])
                responses.put(
                    artifacts_api.ArtifactResponseWrapper(
                        get_artifact_response=artifacts_api.GetArtifactResponse(), is_last=True
                    )
                )
        finally:
            responses.put(None)


def _prepare(channel, pipeline):
    stub = job_api_pb2_grpc.JobServiceStub(channel)
    response = stub.Prepare(
        job_api_pb2.PrepareJobRequest(
            pipeline=pipeline, pipeline_options=struct_pb2.Struct(), job_name="job"
        )
    )
    return stub, response


def _objects(s3, bucket, prefix):
    page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {obj["Key"]: obj["Size"] for obj in page.get("Contents", [])}


def _s3(stores):
    return stores.artifacts._s3


BIG = os.urandom(20 * 1024 * 1024 + 123)  # several S3 parts
SMALL = b"tiny package bytes"
FILES = {"/client/big.tar.gz": BIG, "/client/small.whl": SMALL}
DEPENDENCIES = (
    _artifact("/client/big.tar.gz", "big.tar.gz"),
    _artifact("/client/small.whl", "small.whl"),
)


def test_prepare_advertises_the_staging_endpoint_and_token(settings, stores, executor):
    advertised = dataclasses.replace(settings, advertised_endpoint="jobs.example.com:443")
    with running_shim(advertised) as shim:
        _, response = _prepare(shim.channel, _pipeline())
    assert response.artifact_staging_endpoint.url == "jobs.example.com:443"
    # The token names the job and holds a secret that the job keeps only the hash of.
    job_id, secret = response.staging_session_token.rsplit(".", 1)
    assert job_id == response.preparation_id
    assert (
        stores.jobs.get(job_id).staging_token_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    )


def test_staged_artifacts_land_in_s3_by_content_and_the_pipeline_points_at_them(
    channel, settings, stores, executor
):
    stub, prepared = _prepare(channel, _pipeline(*DEPENDENCIES))
    FakeSdk(channel, FILES).offer(prepared.staging_session_token)

    s3 = _s3(stores)
    expected = {ARTIFACT_PREFIX + hashlib.sha256(b).hexdigest(): len(b) for b in (BIG, SMALL)}
    assert _objects(s3, settings.bucket_name, ARTIFACT_PREFIX) == expected
    assert not s3.list_multipart_uploads(Bucket=settings.bucket_name).get("Uploads")
    for key in expected:
        body = s3.get_object(Bucket=settings.bucket_name, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == key.rsplit("/", 1)[1]

    job_id = prepared.preparation_id
    stub.Run(job_api_pb2.RunJobRequest(preparation_id=job_id))
    assert executor.started == [job_id]
    stored = pipeline_pb2.Pipeline.FromString(
        stub.GetPipeline(job_api_pb2.GetJobPipelineRequest(job_id=job_id)).pipeline
    )
    urls = [
        pipeline_pb2.ArtifactUrlPayload.FromString(a.type_payload).url
        for a in stored.components.environments["py"].dependencies
    ]
    assert urls == [f"s3://{settings.bucket_name}/{key}" for key in expected]
    names = [
        pipeline_pb2.ArtifactStagingToRolePayload.FromString(a.role_payload).staged_name
        for a in stored.components.environments["py"].dependencies
    ]
    assert names == ["big.tar.gz", "small.whl"]


def test_the_shims_log_names_a_staged_artifact_by_a_hash_prefix_only(channel, caplog):
    _, prepared = _prepare(channel, _pipeline(*DEPENDENCIES))
    with caplog.at_level(logging.INFO, logger="beamjobs.shim.staging"):
        FakeSdk(channel, FILES).offer(prepared.staging_session_token)
    digest = hashlib.sha256(SMALL).hexdigest()
    logged = [r.getMessage() for r in caplog.records if r.name == "beamjobs.shim.staging"]
    assert any(f"small.whl as {digest[:12]}…" in line for line in logged), logged
    assert not any(digest in line for line in logged)


def test_the_same_bytes_staged_again_add_no_object(channel, settings, stores, executor):
    _, first = _prepare(channel, _pipeline(*DEPENDENCIES))
    FakeSdk(channel, FILES).offer(first.staging_session_token)
    before = _objects(_s3(stores), settings.bucket_name, "artifacts/")
    # Another job, the same bytes under other paths and names.
    renamed = {"/elsewhere/a": BIG, "/elsewhere/b": SMALL}
    _, second = _prepare(
        channel, _pipeline(_artifact("/elsewhere/a", "a.tar.gz"), _artifact("/elsewhere/b", "b"))
    )
    FakeSdk(channel, renamed).offer(second.staging_session_token)
    assert _objects(_s3(stores), settings.bucket_name, "artifacts/") == before


def test_an_artifact_declaring_a_stored_hash_is_not_sent_again(channel, settings, stores, executor):
    _, first = _prepare(channel, _pipeline(_artifact("/client/small.whl", "small.whl")))
    FakeSdk(channel, FILES).offer(first.staging_session_token)
    declared = _artifact("/client/small.whl", "small.whl", hashlib.sha256(SMALL).hexdigest())
    stub, second = _prepare(channel, _pipeline(declared))
    sdk = FakeSdk(channel, FILES)
    sdk.offer(second.staging_session_token)
    assert sdk.sent_paths == []
    stub.Run(job_api_pb2.RunJobRequest(preparation_id=second.preparation_id))


def _age(bucket, key, days):
    """As if the object had been written `days` ago (S3's expiry counts from then)."""
    from moto.s3.models import s3_backends

    stored = s3_backends["123456789012"]["aws"].buckets[bucket].keys[key]
    stored.last_modified -= datetime.timedelta(days=days)


@pytest.mark.parametrize(("age_days", "renewed"), [(20, True), (0, False)])
def test_an_artifact_a_new_job_reuses_is_renewed_once_it_is_a_day_old(
    channel, settings, stores, executor, age_days, renewed
):
    # Given an artifact staged for one job, written `age_days` ago
    _, first = _prepare(channel, _pipeline(_artifact("/client/small.whl", "small.whl")))
    FakeSdk(channel, FILES).offer(first.staging_session_token)
    key = ARTIFACT_PREFIX + hashlib.sha256(SMALL).hexdigest()
    _age(settings.bucket_name, key, age_days)
    written = _s3(stores).head_object(Bucket=settings.bucket_name, Key=key)["LastModified"]
    # When a new job of the same principal reuses it (its bytes are not sent again)
    declared = _artifact("/client/small.whl", "small.whl", hashlib.sha256(SMALL).hexdigest())
    _, second = _prepare(channel, _pipeline(declared))
    sdk = FakeSdk(channel, FILES)
    sdk.offer(second.staging_session_token)
    assert sdk.sent_paths == []
    # Then an old one is written again (S3's expiry counts from now), a recent one is not
    after = _s3(stores).head_object(Bucket=settings.bucket_name, Key=key)
    assert (after["LastModified"] > written) is renewed
    assert _s3(stores).get_object(Bucket=settings.bucket_name, Key=key)["Body"].read() == SMALL


def test_bytes_that_differ_from_their_declared_hash_are_refused(
    channel, settings, stores, executor
):
    lying = _artifact("/client/small.whl", "small.whl", hashlib.sha256(b"other").hexdigest())
    stub, prepared = _prepare(channel, _pipeline(lying))
    with pytest.raises(grpc.RpcError) as refused:
        FakeSdk(channel, FILES).offer(prepared.staging_session_token)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sha256" in refused.value.details()
    assert _objects(_s3(stores), settings.bucket_name, ARTIFACT_PREFIX) == {}
    with pytest.raises(grpc.RpcError) as run:
        stub.Run(job_api_pb2.RunJobRequest(preparation_id=prepared.preparation_id))
    assert run.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_an_artifact_over_the_size_limit_is_resource_exhausted(settings, stores, executor):
    limited = dataclasses.replace(settings, quota_artifact_bytes_per_job=10 * 1024 * 1024)
    with running_shim(limited) as shim:
        _, prepared = _prepare(shim.channel, _pipeline(*DEPENDENCIES))
        with pytest.raises(grpc.RpcError) as refused:
            FakeSdk(shim.channel, FILES).offer(prepared.staging_session_token)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    s3 = _s3(stores)
    assert _objects(s3, settings.bucket_name, "artifacts/") == {}
    assert not s3.list_multipart_uploads(Bucket=settings.bucket_name).get("Uploads")


def test_a_client_that_hangs_up_mid_staging_leaves_the_preparation_unrunnable(
    channel, settings, stores, executor
):
    small_first = (DEPENDENCIES[1], DEPENDENCIES[0])
    stub, prepared = _prepare(channel, _pipeline(*small_first))
    job_id = prepared.preparation_id
    FakeSdk(channel, FILES).offer(
        prepared.staging_session_token, hang_up_after_bytes=6 * 1024 * 1024
    )

    # The session records what it staged before the client left: only the big one is missing.
    deadline = time.monotonic() + 10
    while stores.jobs.get(job_id).unstaged != ("big.tar.gz",):
        assert time.monotonic() < deadline, stores.jobs.get(job_id).unstaged
        time.sleep(0.05)
    with pytest.raises(grpc.RpcError) as run:
        stub.Run(job_api_pb2.RunJobRequest(preparation_id=job_id))
    assert run.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "big.tar.gz" in run.value.details()
    assert "small.whl" not in run.value.details()
    assert executor.started == []
    # Nothing half-written is visible, and the abandoned upload is gone.
    s3 = _s3(stores)
    assert _objects(s3, settings.bucket_name, ARTIFACT_PREFIX) == {
        ARTIFACT_PREFIX + hashlib.sha256(SMALL).hexdigest(): len(SMALL)
    }
    deadline = time.monotonic() + 10
    while s3.list_multipart_uploads(Bucket=settings.bucket_name).get("Uploads"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert _objects(s3, settings.bucket_name, INCOMING_PREFIX) == {}

    # Staging again (the session that ended let go of the token) finishes the job: only the
    # missing artifact is asked for.
    sdk = FakeSdk(channel, FILES)
    sdk.offer(prepared.staging_session_token)
    assert sdk.sent_paths == ["/client/big.tar.gz"]
    stub.Run(job_api_pb2.RunJobRequest(preparation_id=job_id))
    assert executor.started == [job_id]


def test_a_jobs_artifact_bytes_are_counted_across_its_staging_sessions(settings, stores, executor):
    limited = dataclasses.replace(settings, quota_artifact_bytes_per_job=30 * 1024 * 1024)
    files = {**FILES, "/client/other.tar.gz": os.urandom(15 * 1024 * 1024)}
    with running_shim(limited) as shim:
        dependencies = (DEPENDENCIES[0], _artifact("/client/other.tar.gz", "other.tar.gz"))
        _, prepared = _prepare(shim.channel, _pipeline(*dependencies))
        job_id = prepared.preparation_id
        # The first session sends the 20 MiB artifact, and leaves before the 15 MiB one.
        FakeSdk(shim.channel, files).offer(
            prepared.staging_session_token, hang_up_after_bytes=len(BIG)
        )
        deadline = time.monotonic() + 10
        while stores.jobs.get(job_id).unstaged != ("other.tar.gz",):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert stores.jobs.get(job_id).artifact_bytes == len(BIG)
        # Staging again does not get the whole quota back: 15 MiB more pass 30.
        with pytest.raises(grpc.RpcError) as refused:
            FakeSdk(shim.channel, files).offer(prepared.staging_session_token)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "artifact bytes per job is 31457280" in refused.value.details()


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (lambda prepared: "no-such-preparation", grpc.StatusCode.INVALID_ARGUMENT),
        (lambda prepared: prepared.preparation_id, grpc.StatusCode.INVALID_ARGUMENT),
        (lambda prepared: staging_token("no-such-preparation", mint()), grpc.StatusCode.NOT_FOUND),
        (
            lambda prepared: staging_token(prepared.preparation_id, mint()),
            grpc.StatusCode.NOT_FOUND,
        ),
    ],
    ids=["not-a-token", "the-job-id", "unknown-job", "guessed-secret"],
)
def test_staging_with_anything_but_the_preparers_token_is_refused_and_stores_nothing(
    channel, settings, stores, executor, token, code
):
    stub, prepared = _prepare(channel, _pipeline(*DEPENDENCIES))
    before = stores.jobs.get(prepared.preparation_id)
    sdk = FakeSdk(channel, FILES)
    with pytest.raises(grpc.RpcError) as refused:
        sdk.offer(token(prepared))
    assert refused.value.code() == code
    assert sdk.sent_paths == []
    assert _objects(_s3(stores), settings.bucket_name, "artifacts/") == {}
    assert stores.jobs.get(prepared.preparation_id) == before


def test_a_second_session_is_aborted_while_one_holds_the_token_and_a_spent_one_is_refused(
    channel, stores, executor
):
    stub, prepared = _prepare(channel, _pipeline(*DEPENDENCIES))
    # A first session starts and holds the token: the server has asked it to resolve.
    answers = queue.Queue()
    answers.put(artifacts_api.ArtifactResponseWrapper(staging_token=prepared.staging_session_token))
    first = artifact_api_pb2_grpc.ArtifactStagingServiceStub(
        channel
    ).ReverseArtifactRetrievalService(iter(answers.get, None))
    assert next(first).HasField("resolve_artifact")
    with pytest.raises(grpc.RpcError) as second:
        FakeSdk(channel, FILES).offer(prepared.staging_session_token)
    assert second.value.code() == grpc.StatusCode.ABORTED
    assert "another staging session holds" in second.value.details()
    # The first ends early, which lets go of the token: another session completes...
    first.cancel()
    answers.put(None)
    deadline = time.monotonic() + 10
    while stores.jobs.get(prepared.preparation_id).staging_lease is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    FakeSdk(channel, FILES).offer(prepared.staging_session_token)
    # ...and spends it.
    with pytest.raises(grpc.RpcError) as spent:
        FakeSdk(channel, FILES).offer(prepared.staging_session_token)
    assert spent.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "was used" in spent.value.details()
    stub.Run(job_api_pb2.RunJobRequest(preparation_id=prepared.preparation_id))


def test_staging_for_an_already_run_job_is_refused(channel, stores, executor):
    stub, prepared = _prepare(channel, _pipeline())
    stub.Run(job_api_pb2.RunJobRequest(preparation_id=prepared.preparation_id))
    with pytest.raises(grpc.RpcError) as late:
        FakeSdk(channel, FILES).offer(prepared.staging_session_token)
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_job_with_nothing_to_stage_runs_without_a_session(channel, executor):
    stub, prepared = _prepare(channel, _pipeline())
    stub.Run(job_api_pb2.RunJobRequest(preparation_id=prepared.preparation_id))
    assert executor.started == [prepared.preparation_id]
