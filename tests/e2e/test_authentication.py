"""`beamjobs serve --require-auth`: every call proves an AWS identity, made here as IAM users
of the embedded AWS; jobs belong to whoever prepared them; unmodified SDKs go through
`beamjobs connect`."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import queue
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import boto3
import botocore.auth
import grpc
import pytest
from apache_beam.portability.api import beam_artifact_api_pb2 as artifact_api
from apache_beam.portability.api import (
    beam_artifact_api_pb2_grpc,
    beam_job_api_pb2_grpc,
    beam_runner_api_pb2,
)
from apache_beam.portability.api import beam_job_api_pb2 as api
from botocore.credentials import ReadOnlyCredentials
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from beamjobs.aws.signed_identity import METADATA_KEY, sign, sts_url
from beamjobs.local.embedded import LOCAL_BUCKET
from tests.e2e.conftest import Process, free_port, serve
from tests.e2e.user_scripts import SCRIPT, submit

REGION = "us-east-1"
ACCOUNT = "123456789012"
# Every method of every service the shim serves but health: none may be reached unproven.
AUTHENTICATED_SERVICES = (
    api.DESCRIPTOR.services_by_name["JobService"],
    artifact_api.DESCRIPTOR.services_by_name["ArtifactStagingService"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)


class User:
    """An IAM user of the embedded AWS, with its access key."""

    def __init__(self, iam, aws_url: str, name: str) -> None:
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        self.arn = f"arn:aws:iam::{ACCOUNT}:user/{name}"
        self.env = {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": aws_url,
        }
        self.credentials = ReadOnlyCredentials(key["AccessKeyId"], key["SecretAccessKey"], None)
        self._url = sts_url(REGION, aws_url)

    def metadata(self, deployment: str = "localhost") -> list[tuple[str, str]]:
        """A proof for the Job API whose clients dial `deployment`."""
        proof = sign(self.credentials, region=REGION, url=self._url, deployment=deployment)
        return [(METADATA_KEY, proof)]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """An embedded AWS with users alice, bob and mallory, and a server that allows alice and
    bob and makes ops an admin."""
    tmp = tmp_path_factory.mktemp("auth")
    aws_port, port = free_port(), free_port()
    aws = Process(["aws", "--port", str(aws_port), "--template", "template.yaml"], tmp / "aws.log")
    aws.wait_for_port(aws_port)
    aws_url = f"http://127.0.0.1:{aws_port}"
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=aws_url,
            region_name=REGION,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        users = {name: User(iam, aws_url, name) for name in ("alice", "bob", "mallory", "ops")}
        server = serve(
            tmp,
            "server",
            port,
            "--aws-endpoint",
            aws_url,
            "--require-auth",
            "--allowed-principal",
            users["alice"].arn,
            "--allowed-principal",
            users["bob"].arn,
            "--admin-principal",
            users["ops"].arn,
        )
        yield {"endpoint": f"localhost:{port}", "aws_url": aws_url, "tmp": tmp, **users}
        server.stop()
    finally:
        aws.stop()


@pytest.fixture
def channel(deployment):
    with grpc.insecure_channel(deployment["endpoint"]) as channel:
        yield channel


def _methods():
    for service in AUTHENTICATED_SERVICES:
        for method in service.methods:
            yield f"/{service.full_name}/{method.name}"


def _raw_call(channel, method: str, metadata=()):
    """One empty message to `method`, whatever its shape; the status it ends with."""
    call = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
    try:
        for _ in call(iter([b""]), metadata=metadata, timeout=20):
            pass
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def _tampered(user: User, **headers) -> str:
    """A proof of `user` with some of its headers changed."""
    proof = json.loads(base64.urlsafe_b64decode(user.metadata()[0][1]))
    proof["headers"].update(headers)
    return base64.urlsafe_b64encode(json.dumps(proof).encode()).decode()


def _forged_signature(user: User) -> str:
    proof = json.loads(base64.urlsafe_b64decode(user.metadata()[0][1]))
    return _tampered(user, Authorization=proof["headers"]["Authorization"][:-8] + "0" * 8)


def test_every_method_refuses_a_call_without_an_identity_and_health_stays_open(channel):
    methods = list(_methods())
    assert len(methods) >= 12, methods
    refused = {method: _raw_call(channel, method)[0] for method in methods}
    assert refused == dict.fromkeys(methods, grpc.StatusCode.UNAUTHENTICATED)
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def _expired_proof(user: User) -> str:
    six_minutes_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=6)
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: six_minutes_ago.replace(tzinfo=None)
    try:
        return user.metadata()[0][1]
    finally:
        botocore.auth.get_current_datetime = original


@pytest.mark.parametrize(
    "proof",
    [
        pytest.param(lambda d: "not a proof", id="garbage"),
        pytest.param(lambda d: base64.urlsafe_b64encode(b"[1, 2]").decode(), id="not-an-object"),
        pytest.param(lambda d: _forged_signature(d["alice"]), id="forged-signature"),
        pytest.param(
            lambda d: sign(
                ReadOnlyCredentials(d["alice"].credentials.access_key, "not-her-secret", None),
                region=REGION,
                url=sts_url(REGION, d["aws_url"]),
                deployment="localhost",
            ),
            id="wrong-secret",
        ),
        pytest.param(
            lambda d: _tampered(d["alice"], **{"x-beamjobs-audience": "vault"}), id="audience"
        ),
        pytest.param(lambda d: _expired_proof(d["alice"]), id="expired"),
        pytest.param(
            lambda d: sign(
                d["alice"].credentials,
                region=REGION,
                url="https://sts.amazonaws.com/",
                deployment="localhost",
            ),
            id="another-sts",
        ),
    ],
)
def test_a_forged_expired_or_malformed_proof_is_unauthenticated(deployment, channel, proof):
    metadata = [(METADATA_KEY, proof(deployment))]
    for method in (
        f"/{api.DESCRIPTOR.services_by_name['JobService'].full_name}/GetJobs",
        f"/{api.DESCRIPTOR.services_by_name['JobService'].full_name}/Prepare",
    ):
        assert _raw_call(channel, method, metadata)[0] is grpc.StatusCode.UNAUTHENTICATED


def test_a_proof_made_for_one_deployment_is_refused_by_another_within_its_window(deployment):
    """Deployment A is the module's server (reached at localhost); B, on the same AWS and
    allowing alice too, is reached at another name (as a second stack's load balancer is)."""
    port = free_port()
    other = serve(
        deployment["tmp"],
        "deployment-b",
        port,
        "--aws-endpoint",
        deployment["aws_url"],
        "--require-auth",
        "--allowed-principal",
        deployment["alice"].arn,
        env={"BEAMJOBS_ADVERTISED_ENDPOINT": "jobs-b.example.internal:443"},
    )
    try:
        for_a = deployment["alice"].metadata("localhost")
        for_b = deployment["alice"].metadata("jobs-b.example.internal")
        with (
            grpc.insecure_channel(deployment["endpoint"]) as a,
            grpc.insecure_channel(f"localhost:{port}") as b,
        ):
            get_jobs = "/" + api.DESCRIPTOR.services_by_name["JobService"].full_name + "/GetJobs"
            assert _raw_call(a, get_jobs, for_a)[0] is grpc.StatusCode.OK
            assert _raw_call(b, get_jobs, for_b)[0] is grpc.StatusCode.OK
            code, details = _raw_call(b, get_jobs, for_a)
            assert code is grpc.StatusCode.UNAUTHENTICATED
            assert "for the Job API at localhost" in details, details
            assert _raw_call(a, get_jobs, for_b)[0] is grpc.StatusCode.UNAUTHENTICATED
    finally:
        other.stop()


def test_a_workers_role_is_refused_even_where_its_whole_account_may_call(deployment):
    """On AWS the shim names its worker task role as never a caller: a job's code runs with
    that role's credentials. Here a role of the embedded AWS plays it."""
    iam = boto3.client(
        "iam",
        endpoint_url=deployment["aws_url"],
        region_name=REGION,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    trust = {"Version": "2012-10-17", "Statement": []}
    role = iam.create_role(RoleName="worker-task", AssumeRolePolicyDocument=json.dumps(trust))
    session = boto3.client(
        "sts", endpoint_url=deployment["aws_url"], region_name=REGION, **_keys(deployment["alice"])
    ).assume_role(RoleArn=role["Role"]["Arn"], RoleSessionName="a-jobs-code")["Credentials"]
    code = ReadOnlyCredentials(
        session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"]
    )
    proof = sign(
        code, region=REGION, url=sts_url(REGION, deployment["aws_url"]), deployment="localhost"
    )
    port = free_port()
    whole_account = serve(
        deployment["tmp"],
        "whole-account",
        port,
        "--aws-endpoint",
        deployment["aws_url"],
        "--require-auth",
        "--allowed-principal",
        ACCOUNT,
        env={"BEAMJOBS_WORKER_PRINCIPALS": role["Role"]["Arn"]},
    )
    try:
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            get_jobs = "/" + api.DESCRIPTOR.services_by_name["JobService"].full_name + "/GetJobs"
            code_status, details = _raw_call(channel, get_jobs, [(METADATA_KEY, proof)])
            assert code_status is grpc.StatusCode.PERMISSION_DENIED, details
            assert "workers are not callers of the Job API" in details
            alice = deployment["alice"].metadata()
            assert _raw_call(channel, get_jobs, alice)[0] is grpc.StatusCode.OK
    finally:
        whole_account.stop()


def _keys(user: User) -> dict[str, str]:
    return {
        "aws_access_key_id": user.credentials.access_key,
        "aws_secret_access_key": user.credentials.secret_key,
    }


def test_a_principal_outside_the_allowed_ones_is_permission_denied(deployment, channel):
    stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetJobs(api.GetJobsRequest(), metadata=deployment["mallory"].metadata())
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert deployment["mallory"].arn in refused.value.details()


def _pipeline() -> beam_runner_api_pb2.Pipeline:
    pipeline = beam_runner_api_pb2.Pipeline(root_transform_ids=["impulse"])
    pipeline.components.transforms["impulse"].spec.urn = "beam:transform:impulse:v1"
    pipeline.components.transforms["impulse"].outputs["out"] = "out"
    pipeline.components.pcollections["out"].is_bounded = beam_runner_api_pb2.IsBounded.BOUNDED
    return pipeline


def _prepare(stub, user: User, name: str) -> api.PrepareJobResponse:
    options = struct_pb2.Struct()
    options.update({"beam:option:job_name:v1": name})
    return stub.Prepare(
        api.PrepareJobRequest(pipeline=_pipeline(), pipeline_options=options, job_name="job"),
        metadata=user.metadata(),
    )


def _listed(stub, user: User) -> set[str]:
    jobs = stub.GetJobs(api.GetJobsRequest(), metadata=user.metadata()).job_info
    return {job.job_id for job in jobs}


def test_alices_job_is_not_found_to_bob_on_every_per_job_call(deployment, channel):
    alice, bob, ops = deployment["alice"], deployment["bob"], deployment["ops"]
    stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
    prepared = _prepare(stub, alice, "alices")
    job_id = prepared.preparation_id
    state_before = stub.GetState(api.GetJobStateRequest(job_id=job_id), metadata=alice.metadata())

    per_job_calls = {
        "GetState": lambda m: stub.GetState(api.GetJobStateRequest(job_id=job_id), metadata=m),
        "GetPipeline": lambda m: stub.GetPipeline(
            api.GetJobPipelineRequest(job_id=job_id), metadata=m
        ),
        "GetJobMetrics": lambda m: stub.GetJobMetrics(
            api.GetJobMetricsRequest(job_id=job_id), metadata=m
        ),
        "Run": lambda m: stub.Run(api.RunJobRequest(preparation_id=job_id), metadata=m),
        "Cancel": lambda m: stub.Cancel(api.CancelJobRequest(job_id=job_id), metadata=m),
        "Drain": lambda m: stub.Drain(api.DrainJobRequest(job_id=job_id), metadata=m),
        "GetStateStream": lambda m: list(
            stub.GetStateStream(api.GetJobStateRequest(job_id=job_id), metadata=m)
        ),
        "GetMessageStream": lambda m: list(
            stub.GetMessageStream(api.JobMessagesRequest(job_id=job_id), metadata=m)
        ),
        "staging": lambda m: list(
            beam_artifact_api_pb2_grpc.ArtifactStagingServiceStub(
                channel
            ).ReverseArtifactRetrievalService(
                iter(
                    [
                        artifact_api.ArtifactResponseWrapper(
                            staging_token=prepared.staging_session_token
                        )
                    ]
                ),
                metadata=m,
            )
        ),
    }
    answers = {}
    for name, call in per_job_calls.items():
        try:
            call(bob.metadata())
            answers[name] = grpc.StatusCode.OK
        except grpc.RpcError as error:
            answers[name] = error.code()
            assert job_id in error.details() and "does not exist" in error.details()
    assert answers == dict.fromkeys(per_job_calls, grpc.StatusCode.NOT_FOUND)

    # Nothing Bob did touched it, he does not see it listed, and Alice and the admin do.
    after = stub.GetState(api.GetJobStateRequest(job_id=job_id), metadata=alice.metadata())
    assert after == state_before
    assert job_id not in _listed(stub, bob)
    assert job_id in _listed(stub, alice) and job_id in _listed(stub, ops)
    bobs = _prepare(stub, bob, "bobs").preparation_id
    assert bobs in _listed(stub, bob) and bobs not in _listed(stub, alice)
    assert {job_id, bobs} <= _listed(stub, ops)


# A pipeline that runs until cancelled, cancelled through the tunnel once it runs.
CANCELLED_SCRIPT = textwrap.dedent(
    """
    import sys
    import time

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineState


    def sleep_long(x):
        import time

        time.sleep(300)
        return x


    if __name__ == "__main__":
        pipeline = beam.Pipeline(options=PipelineOptions(sys.argv[1:]))
        _ = pipeline | beam.Create([1]) | beam.Map(sleep_long)
        result = pipeline.run()
        print("JOB", result._job_id, flush=True)
        deadline = time.monotonic() + 120
        while result.state != PipelineState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.5)
        result.cancel()
        try:
            result.wait_until_finish()
        except RuntimeError:
            pass
        print("STATE", result.state, flush=True)
    """
)


@pytest.fixture(scope="module")
def tunnel(deployment):
    """`beamjobs connect` as Alice, to the server in plaintext (both on this machine)."""
    port = free_port()
    proxy = Process(
        [
            "connect",
            "--endpoint",
            deployment["endpoint"],
            "--listen",
            f"127.0.0.1:{port}",
            "--plaintext",
            "--dashboard-port",
            "0",
        ],
        deployment["tmp"] / "connect.log",
        env=deployment["alice"].env,
    )
    proxy.wait_for_port(port)
    deployment["tunnel dashboard"] = proxy.dashboard_url()
    yield f"127.0.0.1:{port}"
    proxy.stop()
    assert deployment["alice"].arn in proxy.log.read_text()


def test_the_unchanged_sdk_submits_through_connect_as_alice(tmp_path, deployment, tunnel, sdist):
    job_id = submit(tmp_path, SCRIPT, tunnel, f"--extra_package={sdist}", "--job_name=tunnelled")
    with grpc.insecure_channel(deployment["endpoint"]) as channel:
        stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
        alice, bob = deployment["alice"], deployment["bob"]
        assert job_id in _listed(stub, alice) and job_id not in _listed(stub, bob)
        pipeline = stub.GetPipeline(
            api.GetJobPipelineRequest(job_id=job_id), metadata=alice.metadata()
        ).pipeline
    staged = [
        beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(a.role_payload).staged_name
        for env in pipeline.components.environments.values()
        for a in env.dependencies
    ]
    assert sdist.name in staged


def test_streams_metrics_and_cancel_work_through_connect(tmp_path, tunnel):
    with grpc.insecure_channel(tunnel) as channel:
        stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
        mine = [job.job_id for job in stub.GetJobs(api.GetJobsRequest()).job_info]
        assert mine  # the proxy's calls are Alice's: her jobs are listed
        done = next(
            j.job_id
            for j in stub.GetJobs(api.GetJobsRequest()).job_info
            if j.state == api.JobState.DONE
        )
        states = [e.state for e in stub.GetStateStream(api.GetJobStateRequest(job_id=done))]
        assert states[-1] == api.JobState.DONE
        messages = list(stub.GetMessageStream(api.JobMessagesRequest(job_id=done)))
        assert messages[-1].state_response.state == api.JobState.DONE
        metrics = stub.GetJobMetrics(api.GetJobMetricsRequest(job_id=done)).metrics
        assert metrics.committed

    path = tmp_path / "cancelled.py"
    path.write_text(CANCELLED_SCRIPT)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(path), "--runner=PortableRunner", f"--job_endpoint={tunnel}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "STATE CANCELLED" in done.stdout, done.stdout + done.stderr
    assert time.monotonic() - started < 200  # cancelled, not slept through


def _declaring(sha256: str) -> beam_runner_api_pb2.Pipeline:
    """A pipeline depending on a file it declares the hash of."""
    payload = beam_runner_api_pb2.ArtifactFilePayload(path="/somewhere/pkg.tar.gz", sha256=sha256)
    return _depending("beam:artifact:type:file:v1", payload)


def _naming_staged(sha256: str) -> beam_runner_api_pb2.Pipeline:
    """A pipeline depending on the artifact of that hash as this deployment stores it."""
    url = f"s3://{LOCAL_BUCKET}/artifacts/sha256/{sha256}"
    payload = beam_runner_api_pb2.ArtifactUrlPayload(url=url, sha256=sha256)
    return _depending("beam:artifact:type:url:v1", payload)


def _depending(type_urn: str, payload) -> beam_runner_api_pb2.Pipeline:
    pipeline = _pipeline()
    env = pipeline.components.environments["py"]
    env.urn = "beam:env:embedded_python:v1"
    env.dependencies.add(
        type_urn=type_urn,
        type_payload=payload.SerializeToString(),
        role_urn="beam:artifact:role:staging_to:v1",
        role_payload=beam_runner_api_pb2.ArtifactStagingToRolePayload(
            staged_name="pkg.tar.gz"
        ).SerializeToString(),
    )
    return pipeline


def _first_request_after_resolving(channel, user: User, pipeline) -> str:
    """Prepare `pipeline` as `user`, stage it, and answer what the server asks once its
    artifact is resolved: its bytes ("get_artifact") or nothing (it is done, or had nothing
    to stage)."""
    stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
    prepared = stub.Prepare(
        api.PrepareJobRequest(pipeline=pipeline, job_name="job"), metadata=user.metadata()
    )
    answers = queue.Queue()
    answers.put(artifact_api.ArtifactResponseWrapper(staging_token=prepared.staging_session_token))
    call = beam_artifact_api_pb2_grpc.ArtifactStagingServiceStub(
        channel
    ).ReverseArtifactRetrievalService(iter(answers.get, None), metadata=user.metadata())
    first = next(call, None)
    if first is None:  # nothing to stage: the session ends
        return "done"
    resolve = first.resolve_artifact
    answers.put(
        artifact_api.ArtifactResponseWrapper(
            resolve_artifact_response=artifact_api.ResolveArtifactsResponse(
                replacements=resolve.artifacts
            )
        )
    )
    try:
        return next(call).WhichOneof("request")
    except StopIteration:
        return "done"
    finally:
        call.cancel()
        answers.put(None)


def test_a_declared_hash_stands_for_bytes_only_that_principal_sent(
    deployment, channel, tunnel, sdist
):
    # Alice staged the sdist's bytes through the tunnel (test_the_unchanged_sdk_...).
    sha256 = hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert _first_request_after_resolving(channel, deployment["alice"], _declaring(sha256)) == (
        "done"
    )
    # Bob, who knows only its hash, is asked for the bytes.
    assert _first_request_after_resolving(channel, deployment["bob"], _declaring(sha256)) == (
        "get_artifact"
    )


def test_a_prepare_naming_someone_elses_staged_artifact_gets_none_of_its_bytes(
    deployment, channel, tunnel, sdist
):
    # Alice staged the sdist's bytes; Bob names them where this deployment keeps them.
    sha256 = hashlib.sha256(sdist.read_bytes()).hexdigest()
    stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
    bob = deployment["bob"]
    prepared = stub.Prepare(
        api.PrepareJobRequest(pipeline=_naming_staged(sha256), job_name="job"),
        metadata=bob.metadata(),
    )
    with pytest.raises(grpc.RpcError) as refused:  # unstaged: it cannot run
        stub.Run(api.RunJobRequest(preparation_id=prepared.preparation_id), metadata=bob.metadata())
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "never staged" in refused.value.details()
    # Staging it asks Bob for the bytes; Alice, who sent them, has nothing to stage.
    assert _first_request_after_resolving(channel, bob, _naming_staged(sha256)) == ("get_artifact")
    assert (
        _first_request_after_resolving(channel, deployment["alice"], _naming_staged(sha256))
        == "done"
    )


class TlsFront(grpc.GenericRpcHandler):
    """A TLS listener before the shim, as the load balancer is on AWS: every call, its bytes
    and its metadata, forwarded as they came."""

    def __init__(self, channel) -> None:
        self._channel = channel

    def service(self, details):
        def forward(requests, context):
            call = self._channel.stream_stream(details.method)(
                requests, metadata=context.invocation_metadata()
            )
            try:
                yield from call
            except grpc.RpcError as error:
                context.abort(error.code(), error.details())

        return grpc.stream_stream_rpc_method_handler(forward)


def _self_signed(directory):
    """A certificate for localhost, and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert = certificate.public_bytes(serialization.Encoding.PEM)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (directory / "cert.pem").write_bytes(cert)
    return cert, private


@pytest.fixture
def tls_front(deployment, tmp_path):
    """The shim behind TLS on localhost: (its address, the certificate file to trust)."""
    from concurrent import futures

    cert, key = _self_signed(tmp_path)
    with grpc.insecure_channel(deployment["endpoint"]) as shim:
        server = grpc.server(futures.ThreadPoolExecutor(16), handlers=[TlsFront(shim)])
        port = server.add_secure_port("localhost:0", grpc.ssl_server_credentials([(key, cert)]))
        server.start()
        yield f"localhost:{port}", tmp_path / "cert.pem"
        server.stop(0)


def _connect(deployment, endpoint, **env):
    port = free_port()
    proxy = Process(
        ["connect", "--endpoint", endpoint, "--listen", f"127.0.0.1:{port}", "--no-dashboard"],
        deployment["tmp"] / f"connect-tls-{port}.log",
        env={**deployment["alice"].env, **env},
    )
    proxy.wait_for_port(port)
    return proxy, f"127.0.0.1:{port}"


def test_connect_reaches_the_shim_over_tls_and_only_with_a_trusted_certificate(
    deployment, tls_front
):
    front, certificate = tls_front
    proxy, address = _connect(deployment, front, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=str(certificate))
    try:
        with grpc.insecure_channel(address) as channel:
            stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
            # Unary and streaming calls, as Alice, through TLS.
            options = struct_pb2.Struct()
            prepared = stub.Prepare(
                api.PrepareJobRequest(pipeline=_pipeline(), pipeline_options=options, job_name="t")
            )
            assert prepared.artifact_staging_endpoint.url == address
            job_id = prepared.preparation_id
            assert job_id in _listed(stub, deployment["alice"])
            assert stub.Cancel(api.CancelJobRequest(job_id=job_id)).state == api.JobState.CANCELLED
            states = [e.state for e in stub.GetStateStream(api.GetJobStateRequest(job_id=job_id))]
            assert states == [api.JobState.STOPPED, api.JobState.CANCELLED]
    finally:
        proxy.stop()
    # With only the system's roots, the self-signed shim is not trusted: nothing gets through.
    untrusting, address = _connect(deployment, front)
    try:
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
            beam_job_api_pb2_grpc.JobServiceStub(channel).GetJobs(api.GetJobsRequest(), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        untrusting.stop()


def _cli(deployment, user: User | None, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "beamjobs.cli", "jobs", "--endpoint", deployment["endpoint"], *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, **(user.env if user else {})},
    )


def test_the_cli_proves_its_users_identity_and_lists_their_jobs_only(deployment, channel):
    stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
    alices = _prepare(stub, deployment["alice"], "cli-alice").preparation_id
    bobs = _prepare(stub, deployment["bob"], "cli-bob").preparation_id

    as_alice = _cli(deployment, deployment["alice"], "--auth", "list", "--name", "cli-")
    as_bob = _cli(deployment, deployment["bob"], "--auth", "describe", alices)
    anonymous = _cli(deployment, None, "list")
    mallory = _cli(deployment, deployment["mallory"], "--auth", "list")

    assert as_alice.returncode == 0, as_alice.stderr
    assert [job["job_id"] for job in json.loads(as_alice.stdout)] == [alices]
    assert bobs not in as_alice.stdout
    assert as_bob.returncode == 3  # another's job is not found
    assert anonymous.returncode == 4 and "UNAUTHENTICATED" in anonymous.stderr
    assert mallory.returncode == 4 and "PERMISSION_DENIED" in mallory.stderr


def test_the_dashboard_of_connect_reads_with_its_users_identity(deployment, channel, tunnel):
    dashboard = deployment["tunnel dashboard"]
    stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
    alices = _prepare(stub, deployment["alice"], "board-alice").preparation_id
    bobs = _prepare(stub, deployment["bob"], "board-bob").preparation_id

    with urllib.request.urlopen(f"{dashboard}/api/jobs?name=board-", timeout=30) as answer:
        listed = [job["job_id"] for job in json.load(answer)["jobs"]]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{dashboard}/api/jobs/{bobs}", timeout=30)

    assert listed == [alices]
    assert refused.value.code == 404
