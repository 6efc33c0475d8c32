"""`make bench` (its listing part): the first page of a job list with 100, 10,000 and 100,000
jobs stored, Beamjobs' ListJobs beside Beam's LocalJobServicer's GetJobs in the same run.

Beamjobs runs as `make run` runs it, on an embedded AWS of its own process; the jobs are written
into its table as the store writes them (batched, to seed quickly). LocalJobServicer gets the
same number of Prepares. Both are asked through the same wire classes (ours; Beam's server
speaks the same protocol). Also printed: how many index items DynamoDB reads for that page (the
Query's ScannedCount), which is what real DynamoDB's latency follows; moto's index Query reads
every item of the table whatever the page, so the embedded AWS's latency is not that figure.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from beamjobs.api import job_api_pb2, job_api_pb2_grpc, jobs_pb2, jobs_pb2_grpc, pipeline_pb2
from beamjobs.aws import clients as aws_clients
from beamjobs.aws.dynamodb_store import DynamoJobStore, listing_query
from beamjobs.domain.model import Job
from beamjobs.domain.states import JobState
from beamjobs.domain.store import JobQuery
from beamjobs.local.embedded import LOCAL_TABLE, local_settings, use_offline_credentials
from tests.processes import ROOT, Process, free_port, serve

PAGE = 100
_BATCH_WRITE_ITEMS = 25


class BatchingClient:
    """Stands for the DynamoDB client while seeding: the store's PutItems, sent 25 at a time."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._items: list[dict[str, Any]] = []

    def put_item(self, *, Item: dict[str, Any], **_: Any) -> None:  # noqa: N803 (boto3's name)
        self._items.append(Item)

    def flush(self) -> None:
        for start in range(0, len(self._items), _BATCH_WRITE_ITEMS):
            request = {
                LOCAL_TABLE: [
                    {"PutRequest": {"Item": item}}
                    for item in self._items[start : start + _BATCH_WRITE_ITEMS]
                ]
            }
            while request:
                request = self._client.batch_write_item(RequestItems=request).get(
                    "UnprocessedItems"
                )
        self._items.clear()


def seed(client: Any, first: int, last: int) -> None:
    """Jobs first..last-1, one in a hundred RUNNING, the rest DONE, a second apart."""
    states = [JobState.RUNNING] + [JobState.DONE] * 99

    def write(chunk: range) -> None:
        batcher = BatchingClient(client)
        store = DynamoJobStore(batcher, LOCAL_TABLE, item_lifetime=86_400)
        for index in chunk:
            at = 1_700_000_000.0 + index
            store.create(
                Job(
                    job_id=f"bench-{index:06d}",
                    job_name=f"bench-{index % 7}",
                    state=states[index % 100],
                    state_time=at,
                    seq=1,
                    created_at=at,
                    pipeline_ref="pipelines/none",
                    options_ref="options/none",
                    options_json="{}",
                    owner="local",
                    engine="local",
                )
            )
        batcher.flush()

    step = 2000
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, [range(s, min(s + step, last)) for s in range(first, last, step)]))


def _ms(latency: tuple[float, float]) -> str:
    return f"{latency[0]:.1f} / {latency[1]:.1f}"


def _latencies(call: Any, times: int) -> tuple[float, float]:
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return statistics.median(seconds) * 1000, seconds[int(len(seconds) * 0.95) - 1] * 1000


def _pipeline() -> bytes:
    pipeline = pipeline_pb2.Pipeline(root_transform_ids=["impulse"])
    pipeline.components.transforms["impulse"].spec.urn = "beam:transform:impulse:v1"
    return pipeline.SerializeToString()


def beam_get_jobs(counts: list[int], times: int) -> dict[int, tuple[float, float]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main"]
        + ["--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = {}
    try:
        # Every job in one answer: tens of megabytes at 100,000.
        options = [("grpc.max_receive_message_length", 1 << 30)]
        with grpc.insecure_channel(f"localhost:{port}", options=options) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = job_api_pb2_grpc.JobServiceStub(channel)
            request = job_api_pb2.PrepareJobRequest(pipeline=_pipeline(), job_name="bench")
            prepared = 0
            for count in counts:
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda _: stub.Prepare(request), range(count - prepared)))
                prepared = count
                results[count] = _latencies(
                    lambda: stub.GetJobs(job_api_pb2.GetJobsRequest(), timeout=600), times
                )
    finally:
        process.terminate()
        process.wait(30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 10_000, 100_000])
    parser.add_argument("--calls", type=int, default=20, help="calls per figure")
    args = parser.parse_args()
    use_offline_credentials()
    tmp = Path(tempfile.mkdtemp(prefix="bench-listing-"))
    aws_port, port = free_port(), free_port()
    aws = Process(["aws", "--port", str(aws_port)], tmp / "aws.log")
    aws.wait_for_port(aws_port)
    endpoint = f"http://127.0.0.1:{aws_port}"
    shim = serve(tmp, "shim", port, "--aws-endpoint", endpoint)
    dynamodb = aws_clients.client("dynamodb", local_settings(endpoint))
    ours: dict[int, dict[str, Any]] = {}
    try:
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            jobs = jobs_pb2_grpc.JobsStub(channel)
            seeded = 0
            for count in args.counts:
                started = time.monotonic()
                seed(dynamodb, seeded, count)
                seeded = count
                print(f"  seeded {count} jobs ({time.monotonic() - started:.0f} s)", flush=True)
                first = jobs_pb2.ListJobsRequest(page_size=PAGE)
                running = jobs_pb2.ListJobsRequest(
                    page_size=PAGE, states=[job_api_pb2.JobState.RUNNING]
                )
                assert len(jobs.ListJobs(first).jobs) == min(PAGE, count)
                index_read = dynamodb.query(
                    TableName=LOCAL_TABLE, Limit=PAGE, **listing_query(JobQuery())[0]
                )["ScannedCount"]
                ours[count] = {
                    "first page": _latencies(lambda r=first: jobs.ListJobs(r), args.calls),
                    "RUNNING only": _latencies(lambda r=running: jobs.ListJobs(r), args.calls),
                    "index items read": index_read,
                }
    finally:
        shim.stop()
        aws.stop()
    peer = beam_get_jobs(args.counts, max(3, args.calls // 4))
    print(f"\nthe first page of the job list (ms, p50 / p95; {PAGE} jobs a page):")
    print(f"  {'jobs stored':<40}" + "".join(f"{count:>18}" for count in args.counts))
    for name in ("first page", "RUNNING only"):
        cells = "".join(f"{_ms(ours[c][name]):>18}" for c in args.counts)
        print(f"  {'beamjobs ListJobs, ' + name:<40}{cells}")
    cells = "".join(f"{ours[c]['index items read']:>18}" for c in args.counts)
    print(f"  {'  index items DynamoDB reads for it':<40}{cells}")
    cells = "".join(f"{_ms(peer[c]):>18}" for c in args.counts)
    print(f"  {'LocalJobServicer GetJobs (every job)':<40}{cells}")
    print(
        "  (the embedded AWS's index Query reads and sorts every item of the table: its latency "
        "grows with the table; DynamoDB's follows the items read)"
    )


if __name__ == "__main__":
    main()
