"""The abuse suite's server: `beamjobs serve` in a process of its own, on an embedded AWS in
another (so the shim's memory is its own, and what is stored can be looked at from here), with
quotas tight enough to reach in a test. The suite runs twice: against a server that serves
everyone as the local caller, and against one that requires every call to prove an AWS identity
(its calls then carry a proof of an allowed IAM user of the embedded AWS)."""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials

from beamjobs.api import artifact_api_pb2_grpc, job_api_pb2_grpc, jobs_pb2_grpc
from beamjobs.aws.signed_identity import METADATA_KEY, sign, sts_url
from beamjobs.local.embedded import LOCAL_BUCKET, LOCAL_REGION, LOCAL_TABLE
from tests.processes import Process, free_port, serve

MiB = 1024 * 1024
QUOTAS = {
    "BEAMJOBS_QUOTA_PREPARES_PER_MINUTE": "40",
    "BEAMJOBS_QUOTA_ARTIFACT_BYTES_PER_JOB": str(16 * MiB),
    "BEAMJOBS_QUOTA_WORKER_VCPU": "2",
    "BEAMJOBS_QUOTA_WORKER_MEMORY_MB": "8192",
    "BEAMJOBS_QUOTA_IMAGES": "apache/beam_*",
    "BEAMJOBS_QUOTA_STREAMS": "64",
    # Long enough for a 200 MiB message to arrive on a busy machine (a message in flight is
    # not idle, but the server sees it only whole).
    "BEAMJOBS_STAGING_IDLE_SECONDS": "20",
}
CLIENT_OPTIONS = [
    ("grpc.max_send_message_length", 300 * MiB),
    ("grpc.max_receive_message_length", 300 * MiB),
]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(pid)


class PeakRss:
    """The highest RSS of a process while the context is open (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.bytes = rss_bytes(pid)
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.bytes = max(self.bytes, rss_bytes(self._pid))

    def __enter__(self) -> PeakRss:
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._sampler.join()
        self.bytes = max(self.bytes, rss_bytes(self._pid))


class Storage:
    """What the server stored: objects, items and open multipart uploads, by key."""

    def __init__(self, endpoint_url: str) -> None:
        session = boto3.session.Session(
            aws_access_key_id="embedded", aws_secret_access_key="embedded", region_name=LOCAL_REGION
        )
        config = Config(retries={"mode": "standard"})
        self.s3 = session.client("s3", endpoint_url=endpoint_url, config=config)
        self.dynamodb = session.client("dynamodb", endpoint_url=endpoint_url, config=config)

    def snapshot(self) -> dict[str, frozenset[Any]]:
        objects = set()
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=LOCAL_BUCKET):
            objects |= {(o["Key"], o["ETag"]) for o in page.get("Contents", [])}
        items = set()
        # Keys, and what changes in place: a counter's count, a record's sequence number.
        scan = self.dynamodb.get_paginator("scan").paginate(
            TableName=LOCAL_TABLE,
            ProjectionExpression="pk, sk, #n, seq",
            ExpressionAttributeNames={"#n": "n"},
        )
        for page in scan:
            items |= {
                (i["pk"]["S"], i["sk"]["S"], repr(i.get("n")), repr(i.get("seq")))
                for i in page["Items"]
            }
        uploads = self.s3.list_multipart_uploads(Bucket=LOCAL_BUCKET).get("Uploads", [])
        return {
            "objects": frozenset(objects),
            "items": frozenset(items),
            "uploads": frozenset(u["UploadId"] for u in uploads),
        }


Metadata = list[tuple[str, str]]


@dataclass
class Server:
    endpoint: str
    aws_endpoint: str
    pid: int
    # Calls on it carry `metadata()`, as every call to this server must.
    channel: grpc.Channel
    storage: Storage
    # What a call must carry: a fresh identity proof, or nothing for a server without auth.
    metadata: Callable[[], Metadata]

    @property
    def jobs(self) -> job_api_pb2_grpc.JobServiceStub:
        return job_api_pb2_grpc.JobServiceStub(self.channel)

    @property
    def beamjobs(self) -> jobs_pb2_grpc.JobsStub:
        return jobs_pb2_grpc.JobsStub(self.channel)

    @property
    def staging(self) -> artifact_api_pb2_grpc.ArtifactStagingServiceStub:
        return artifact_api_pb2_grpc.ArtifactStagingServiceStub(self.channel)


OPEN, REQUIRE_AUTH = "open", "require-auth"


@pytest.fixture(scope="module", params=[OPEN, REQUIRE_AUTH])
def server(request, tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("abuse")
    aws_port, port = free_port(), free_port()
    aws = Process(["aws", "--port", str(aws_port)], tmp / "aws.log")
    aws.wait_for_port(aws_port)
    aws_endpoint = f"http://127.0.0.1:{aws_port}"
    metadata: Callable[[], Metadata] = list
    auth: tuple[str, ...] = ()
    if request.param == REQUIRE_AUTH:
        arn, metadata = _iam_user(aws_endpoint, "tenant")
        auth = ("--require-auth", "--allowed-principal", arn)
    shim = serve(tmp, "shim", port, "--aws-endpoint", aws_endpoint, *auth, env=QUOTAS)
    try:
        with grpc.insecure_channel(f"localhost:{port}", options=CLIENT_OPTIONS) as plain:
            channel = grpc.intercept_channel(plain, _Carrying(metadata))
            yield Server(
                f"localhost:{port}",
                aws_endpoint,
                shim.popen.pid,
                channel,
                Storage(aws_endpoint),
                metadata,
            )
    finally:
        shim.stop()
        aws.stop()


def _iam_user(aws_endpoint: str, name: str) -> tuple[str, Callable[[], Metadata]]:
    """An IAM user of the embedded AWS: its ARN, and a maker of proofs of its identity."""
    iam = boto3.client(
        "iam",
        endpoint_url=aws_endpoint,
        region_name=LOCAL_REGION,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    key = iam.create_access_key(UserName=name)["AccessKey"]
    credentials = ReadOnlyCredentials(key["AccessKeyId"], key["SecretAccessKey"], None)
    url = sts_url(LOCAL_REGION, aws_endpoint)
    return arn, lambda: [
        (METADATA_KEY, sign(credentials, region=LOCAL_REGION, url=url, deployment="localhost"))
    ]


class _Details(
    namedtuple("_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready")),
    grpc.ClientCallDetails,
):
    pass


class _Carrying(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `metadata()` to every call."""

    def __init__(self, metadata: Callable[[], Metadata]) -> None:
        self._metadata = metadata

    def _carrying(self, details: grpc.ClientCallDetails) -> _Details:
        return _Details(
            details.method,
            details.timeout,
            [*(details.metadata or ()), *self._metadata()],
            details.credentials,
            details.wait_for_ready,
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._carrying(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._carrying(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._carrying(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._carrying(details), requests)


@pytest.fixture
def unchanged(server):
    """Asserts, after the test, that the server stored nothing while it ran."""
    before = server.storage.snapshot()
    yield
    after = server.storage.snapshot()
    for kind in before:
        assert after[kind] == before[kind], f"new {kind}: {set(after[kind]) - set(before[kind])}"
