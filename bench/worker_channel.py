"""`make bench` (its worker channel part): what a worker's calls cost through the worker
function as deployed, whose calls (all but Beat) keep an idempotency record, beside the same
routes without those records, on one embedded AWS in one run.

Each job is claimed, beats, says 5 batches of messages and finishes, through the local
executor's channel (Lambda's Invoke API on localhost, as workers reach it). Printed per call:
the median time a worker waits for it, and the DynamoDB requests it makes."""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import boto3

from beamjobs import runtime
from beamjobs.app.handlers import dispatch
from beamjobs.app.worker_channel import WorkerChannel, mint_worker_secret, routes
from beamjobs.aws import clients
from beamjobs.aws.invoker import Handler, LambdaInvoker
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.domain.states import JobState
from beamjobs.local.embedded import start_embedded, use_offline_credentials
from beamjobs.local.worker_channel import LocalWorkerChannel
from beamjobs.settings import Settings
from beamjobs.worker.channel import WORKER_FUNCTION, JobChannel
from beamjobs_functions.worker.app import handler_for
from tests.integration.conftest import make_job, pipeline_bytes
from tests.jobstates import advance
from tests.processes import ROOT

CALLS = ("Claim", "Beat", "Say", "Finish")


def _bare_routes(settings: Settings) -> Handler:
    """The worker function's routes with no idempotency records."""
    stores = runtime.stores(settings)
    served = routes(
        WorkerChannel(
            Jobs(stores.jobs), Jobs(stores.outcomes), stores.blobs, stores.artifacts.location
        )
    )
    return lambda event, context: dispatch(event, served, callers=False)


def _run_jobs(settings: Settings, handler: Handler, jobs: int) -> dict[str, tuple[float, float]]:
    """Per call: (median ms, DynamoDB requests per call) over `jobs` jobs."""
    stores = runtime.stores(settings)
    requests: dict[str, int] = defaultdict(int)
    current = [""]

    def count(**_: Any) -> None:
        requests[current[0]] += 1

    hooked = [
        clients.client("dynamodb", settings),
        clients.client("dynamodb", settings, budget="patient"),
    ]
    for client in hooked:
        client.meta.events.register("before-call.dynamodb", count)
    served = LocalWorkerChannel(handler)
    lambda_client = boto3.client("lambda", endpoint_url=served.url, region_name="us-east-1")
    invoker = LambdaInvoker(lambda_client, {WORKER_FUNCTION: WORKER_FUNCTION})
    times: dict[str, list[float]] = defaultdict(list)
    try:
        for index in range(jobs):
            job_id = f"bench-{time.monotonic_ns()}-{index}"
            secret = mint_worker_secret()
            job = make_job(
                job_id,
                pipeline_ref=stores.blobs.put_content("pipelines", pipeline_bytes()),
                options_ref=stores.blobs.put_content("options", b"{}"),
                worker_secret=secret,
            )
            stores.jobs.create(job)
            advance(stores.jobs, job_id, JobState.STARTING)
            channel = JobChannel(invoker, job_id, secret)
            lines = [Message("JOB_MESSAGE_BASIC", "line", 1.0)] * 10
            steps: list[tuple[str, Callable[[], object]]] = [
                ("Claim", channel.claim),
                ("Beat", channel.beat),
                *[("Say", functools.partial(channel.say, lines)) for _ in range(5)],
                ("Finish", channel.finish),
            ]
            for call, step in steps:
                current[0] = call
                started = time.perf_counter()
                step()
                times[call].append((time.perf_counter() - started) * 1000)
    finally:
        served.stop()
        for client in hooked:
            client.meta.events.unregister("before-call.dynamodb", count)
    return {
        call: (statistics.median(times[call]), requests[call] / len(times[call])) for call in CALLS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=30)
    args = parser.parse_args()
    use_offline_credentials()
    embedded, settings = start_embedded(ROOT / "template.yaml")
    try:
        results = {}
        for _ in range(2):  # alternately, twice: the second round of each is the one shown
            results["deployed"] = _run_jobs(settings, handler_for(settings), args.jobs)
            results["bare"] = _run_jobs(settings, _bare_routes(settings), args.jobs)
    finally:
        embedded.stop()
    print(
        f"\nthe worker channel, {args.jobs} jobs (each: Claim, Beat, 5 Says, Finish): "
        "median ms per call / DynamoDB requests per call"
    )
    print(f"  {'call':<8}{'as deployed (idempotency records)':>36}{'bare routes':>16}")
    for call in CALLS:
        (ours_ms, ours_requests), (bare_ms, bare_requests) = (
            results["deployed"][call],
            results["bare"][call],
        )
        print(
            f"  {call:<8}{ours_ms:>24.1f} ms / {ours_requests:>4.1f}"
            f"{bare_ms:>8.1f} ms / {bare_requests:>4.1f}"
        )


if __name__ == "__main__":
    main()
