"""The abuse suite's server: `beamjobs serve` in a process of its own, on an embedded AWS in
another (so the shim's memory is its own, and what is stored can be looked at from here), with
quotas tight enough to reach in a test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from botocore.config import Config

from beamjobs.api import artifact_api_pb2_grpc, job_api_pb2_grpc, jobs_pb2_grpc
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
    "BEAMJOBS_STAGING_IDLE_SECONDS": "10",
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


@dataclass
class Server:
    endpoint: str
    aws_endpoint: str
    pid: int
    channel: grpc.Channel
    storage: Storage

    @property
    def jobs(self) -> job_api_pb2_grpc.JobServiceStub:
        return job_api_pb2_grpc.JobServiceStub(self.channel)

    @property
    def beamjobs(self) -> jobs_pb2_grpc.JobsStub:
        return jobs_pb2_grpc.JobsStub(self.channel)

    @property
    def staging(self) -> artifact_api_pb2_grpc.ArtifactStagingServiceStub:
        return artifact_api_pb2_grpc.ArtifactStagingServiceStub(self.channel)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("abuse")
    aws_port, port = free_port(), free_port()
    aws = Process(["aws", "--port", str(aws_port)], tmp / "aws.log")
    aws.wait_for_port(aws_port)
    aws_endpoint = f"http://127.0.0.1:{aws_port}"
    shim = serve(tmp, "shim", port, "--aws-endpoint", aws_endpoint, env=QUOTAS)
    try:
        with grpc.insecure_channel(f"localhost:{port}", options=CLIENT_OPTIONS) as channel:
            yield Server(
                f"localhost:{port}", aws_endpoint, shim.popen.pid, channel, Storage(aws_endpoint)
            )
    finally:
        shim.stop()
        aws.stop()


@pytest.fixture
def unchanged(server):
    """Asserts, after the test, that the server stored nothing while it ran."""
    before = server.storage.snapshot()
    yield
    after = server.storage.snapshot()
    for kind in before:
        assert after[kind] == before[kind], f"new {kind}: {set(after[kind]) - set(before[kind])}"
