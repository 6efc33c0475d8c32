"""`make bench`: Beamjobs against Beam's own LocalJobServicer and Beam's Prism runner, driven by
the same client (the Beam Python SDK's PortableRunner) in one run, on this machine.

Prints, for each server (all running side by side, measured alternately): the median
submit→DONE of a trivial pipeline, GetState p50/p99, jobs/s with 4 concurrent clients, the median
Run→RUNNING, the speedup of a CPU-heavy pipeline on 2 SDK workers over 1, the CPU per job of
each server's whole process tree (Beamjobs': the shim and its handlers, the embedded AWS, the
fork server and the workers it forked), and the client's own CPU per job (which bounds jobs/s
on this machine whatever the server); then the ratios ours/peer.
Then, for each server, how much its resident memory grows while an SDK stages one 200 MB
artifact to it. Then Beamjobs alone (Beam's server has no comparable feed): 200 and 1,000
GetStateStream subscribers on one shim, to jobs that then run — delay from each terminal state's
write to its delivery, first to last, the shim's peak RSS and CPU."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import apache_beam as beam
import grpc
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import (
    beam_artifact_api_pb2_grpc,
    beam_job_api_pb2_grpc,
    beam_runner_api_pb2,
)
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.runners.portability import artifact_service

from beamjobs.domain.limits import Quotas

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = "beam:env:embedded_python:v1"
# `make engines` builds it.
PRISM = ROOT / ".cache" / "engines" / "bin" / "prism"
SERVERS = ("beamjobs", "LocalJobServicer", "Prism")
# Where each server runs the user's code: in its own worker process (EMBEDDED), or, for Prism,
# which runs no EMBEDDED environment, in the SDK's own process (LOOPBACK).
ENVIRONMENTS = {"beamjobs": EMBEDDED, "LocalJobServicer": EMBEDDED, "Prism": "LOOPBACK"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(process: subprocess.Popen[bytes], port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} never opened")


def _start(name: str, port: int, settings: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server on `port` (`settings`: environment variables of its own)."""
    if name == "Prism":
        process = subprocess.Popen(
            [str(PRISM), f"--job_port={port}", "--serve_http=false", "--log_level=error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(process, port)
        return process
    if name == "beamjobs":
        command = [
            "-m",
            "beamjobs.cli",
            "serve",
            "--port",
            str(port),
            "--template",
            "template.yaml",
            "--no-dashboard",
        ]
    else:
        command = [
            "-m",
            "apache_beam.runners.portability.local_job_service_main",
            "--port",
            str(port),
        ]
    process = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env={**os.environ, **(settings or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait_for_port(process, port)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _run_trivial_pipeline(endpoint: str, environment: str) -> tuple[float, str]:
    """Build, submit and wait for a trivial pipeline; seconds from submit to DONE, and job id."""
    options = PipelineOptions(
        [
            "--runner=PortableRunner",
            f"--job_endpoint={endpoint}",
            f"--environment_type={environment}",
        ]
    )
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2)
    started = time.perf_counter()
    result = pipeline.run()
    state = result.wait_until_finish()
    elapsed = time.perf_counter() - started
    if state != "DONE":
        raise RuntimeError(f"pipeline ended {state}")
    return elapsed, result._job_id


def _run_to_running(endpoint: str) -> float:
    """Seconds from calling Run to the RUNNING state event (as the server timestamps it)."""
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([1]) | beam.Map(str)
    proto = pipeline.to_runner_api()
    for env in proto.components.environments.values():
        env.urn, env.payload = EMBEDDED, b""
    with grpc.insecure_channel(endpoint) as channel:
        stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
        prepared = stub.Prepare(api.PrepareJobRequest(pipeline=proto, job_name="run-to-running"))
        states = stub.GetStateStream(api.GetJobStateRequest(job_id=prepared.preparation_id))
        next(states)  # as the SDK does: the stream is open (and answered) before Run
        started = time.time()
        stub.Run(api.RunJobRequest(preparation_id=prepared.preparation_id))
        for event in states:
            if event.state == api.JobState.RUNNING:
                running = event.timestamp.ToNanoseconds() / 1e9
            if event.state in (api.JobState.DONE, api.JobState.FAILED):
                return running - started
    raise RuntimeError("the job never ended")


def _cpu_heavy_pipeline(endpoint: str, environment: str, workers: int) -> float:
    """Seconds from submit to DONE of a CPU-bound pipeline run by `workers` SDK processes."""
    options = PipelineOptions(
        [
            "--runner=PortableRunner",
            f"--job_endpoint={endpoint}",
            f"--environment_type={environment}",
            "--direct_running_mode=multi_processing",
            f"--direct_num_workers={workers}",
        ]
    )
    pipeline = beam.Pipeline(options=options)
    _ = (
        pipeline
        | beam.Create(list(range(8)))
        | beam.Reshuffle()
        | beam.Map(lambda n: sum(i * i for i in range(10_000_000 + n)))
    )
    started = time.perf_counter()
    if pipeline.run().wait_until_finish() != "DONE":
        raise RuntimeError("the CPU-heavy pipeline failed")
    return time.perf_counter() - started


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def _client_cpu_seconds() -> float:
    """CPU used by this process (the SDK clients) and its waited-for children (the SDK's `pip
    freeze` of every submission); the servers are not waited for, so they do not count."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure_side_by_side(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The servers run side by side and every measurement alternates between them, so that
    this machine's speed, which drifts by tens of percent within minutes, weighs on all alike.
    Run→RUNNING is measured for the servers that run EMBEDDED environments (it submits with no
    SDK process to run LOOPBACK code)."""
    endpoints, servers = {}, []
    try:
        for name in SERVERS:
            port = _free_port()
            servers.append(_start(name, port))
            endpoints[name] = f"localhost:{port}"
        figures: dict[str, dict[str, float]] = {name: {} for name in SERVERS}
        runs: dict[str, list[tuple[float, str]]] = {name: [] for name in SERVERS}
        client_cpu = dict.fromkeys(SERVERS, 0.0)
        for name, endpoint in endpoints.items():
            _run_trivial_pipeline(endpoint, ENVIRONMENTS[name])  # warm-up: first-use costs
        server_cpu = dict.fromkeys(SERVERS, 0.0)
        for _ in range(args.jobs):
            for (name, endpoint), server in zip(endpoints.items(), servers, strict=True):
                before, server_before = _client_cpu_seconds(), _tree_cpu_seconds(server.pid)
                runs[name].append(_run_trivial_pipeline(endpoint, ENVIRONMENTS[name]))
                client_cpu[name] += _client_cpu_seconds() - before
                server_cpu[name] += _tree_cpu_seconds(server.pid) - server_before
        for name in SERVERS:
            figures[name]["submit_to_done_median_s"] = statistics.median(t for t, _ in runs[name])
        for name, latencies in _get_state_latencies(endpoints, runs, args.get_state_calls).items():
            figures[name]["get_state_p50_ms"] = _percentile(latencies, 0.50) * 1000
            figures[name]["get_state_p99_ms"] = _percentile(latencies, 0.99) * 1000
        busy = dict.fromkeys(SERVERS, 0.0)
        for _ in range(2):  # two rounds each, alternating
            for name, endpoint in endpoints.items():
                started = time.perf_counter()
                with ThreadPoolExecutor(args.clients) as pool:
                    jobs = range(args.concurrent_jobs // 2)
                    environment = ENVIRONMENTS[name]
                    list(
                        pool.map(
                            lambda _, e=endpoint, v=environment: _run_trivial_pipeline(e, v), jobs
                        )
                    )
                busy[name] += time.perf_counter() - started
        to_running: dict[str, list[float]] = {name: [] for name in SERVERS}
        for _ in range(args.jobs):
            for name, endpoint in endpoints.items():
                if ENVIRONMENTS[name] == EMBEDDED:
                    to_running[name].append(_run_to_running(endpoint))
        # Each a median of rounds: one run's spread (several percent) exceeds the bar's margin.
        heavy: dict[str, dict[int, list[float]]] = {name: {1: [], 2: []} for name in SERVERS}
        for _ in range(args.heavy_rounds):
            for workers in (1, 2):
                for name, endpoint in endpoints.items():
                    seconds = _cpu_heavy_pipeline(endpoint, ENVIRONMENTS[name], workers)
                    heavy[name][workers].append(seconds)
        for name in SERVERS:
            figures[name].update(
                {
                    f"jobs_per_s_{args.clients}_clients": 2
                    * (args.concurrent_jobs // 2)
                    / busy[name],
                    "run_to_running_median_ms": statistics.median(to_running[name]) * 1000
                    if to_running[name]
                    else math.nan,
                    "cpu_heavy_1_worker_s": statistics.median(heavy[name][1]),
                    "cpu_heavy_2_workers_s": statistics.median(heavy[name][2]),
                    "cpu_heavy_speedup_2_vs_1": statistics.median(heavy[name][1])
                    / statistics.median(heavy[name][2]),
                    "server_cpu_s_per_job": server_cpu[name] / args.jobs,
                    "client_cpu_s_per_job": client_cpu[name] / args.jobs,
                }
            )
        return figures
    finally:
        for server in servers:
            _stop(server)


def _get_state_latencies(
    endpoints: dict[str, str], runs: dict[str, list[tuple[float, str]]], calls: int
) -> dict[str, list[float]]:
    """GetState of each server's last job, alternating call by call."""
    channels = {name: grpc.insecure_channel(endpoint) for name, endpoint in endpoints.items()}
    latencies: dict[str, list[float]] = {name: [] for name in endpoints}
    try:
        stubs = {name: beam_job_api_pb2_grpc.JobServiceStub(c) for name, c in channels.items()}
        for _ in range(calls):
            for name, stub in stubs.items():
                request = api.GetJobStateRequest(job_id=runs[name][-1][1])
                started = time.perf_counter()
                stub.GetState(request)
                latencies[name].append(time.perf_counter() - started)
    finally:
        for channel in channels.values():
            channel.close()
    return latencies


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def _stage_one_artifact(endpoint: str, server_pid: int, size_mb: int) -> tuple[float, float]:
    """Prepare a pipeline depending on one `size_mb` artifact and stage it with the SDK's own
    staging client; return (the server's peak RSS growth in MB, seconds)."""
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([1]) | beam.Map(str)
    proto = pipeline.to_runner_api()
    with tempfile.NamedTemporaryFile(suffix=".bin") as artifact:
        for _ in range(size_mb):
            artifact.write(os.urandom(1024 * 1024))
        artifact.flush()
        for env in proto.components.environments.values():
            env.urn, env.payload = EMBEDDED, b""
            del env.dependencies[:]
            env.dependencies.add(
                type_urn=common_urns.artifact_types.FILE.urn,
                type_payload=beam_runner_api_pb2.ArtifactFilePayload(
                    path=artifact.name
                ).SerializeToString(),
                role_urn=common_urns.artifact_roles.STAGING_TO.urn,
                role_payload=beam_runner_api_pb2.ArtifactStagingToRolePayload(
                    staged_name="big.bin"
                ).SerializeToString(),
            )
        with grpc.insecure_channel(endpoint) as channel:
            prepared = beam_job_api_pb2_grpc.JobServiceStub(channel).Prepare(
                api.PrepareJobRequest(pipeline=proto, job_name="staging-memory")
            )
        # Writing 5 to clear_refs resets the peak (VmHWM) to the current resident size.
        Path(f"/proc/{server_pid}/clear_refs").write_text("5")
        before = _memory_kib(server_pid, "VmRSS")
        started = time.perf_counter()
        with grpc.insecure_channel(prepared.artifact_staging_endpoint.url) as channel:
            artifact_service.offer_artifacts(
                beam_artifact_api_pb2_grpc.ArtifactStagingServiceStub(channel),
                artifact_service.ArtifactRetrievalService(
                    artifact_service.BeamFilesystemHandler(None).file_reader
                ),
                prepared.staging_session_token,
            )
        elapsed = time.perf_counter() - started
    return (_memory_kib(server_pid, "VmHWM") - before) / 1024, elapsed


def staging_memory(name: str, size_mb: int) -> tuple[float, float]:
    """The server's figures while staging; Beamjobs' are its shim's alone (`serve` runs the
    embedded AWS and the workers in processes of their own)."""
    port = _free_port()
    server = _start(name, port)
    try:
        return _stage_one_artifact(f"localhost:{port}", server.pid, size_mb)
    finally:
        _stop(server)


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (which may hold spaces): [0] is the
    state, [1] the parent's pid, [11:15] utime, stime, cutime, cstime in clock ticks."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(root: int) -> float:
    """CPU used by a server's whole process tree: every live descendant's own, plus what its
    exited children used once they were waited for (a worker that ran one job and exited)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    ticks = 0
    for pid in tree:
        with contextlib.suppress(OSError, IndexError):
            ticks += sum(int(field) for field in _stat_fields(pid)[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


async def _fan_out(endpoint: str, job_ids: list[str], subscribers: int) -> list[float]:
    """Subscribe `subscribers` state streams spread over the jobs, run the jobs, and return
    each subscriber's delay from its job's terminal state (as timestamped when written) to
    receiving it."""
    # Ten connections (a channel of its own subchannel pool each: channels to one address share
    # one connection otherwise), as the shim serves at most 100 streams on one connection.
    channels = [
        grpc.aio.insecure_channel(endpoint, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(10)
    ]
    subscribed = 0
    all_subscribed = asyncio.Event()
    terminal = {api.JobState.DONE, api.JobState.FAILED, api.JobState.CANCELLED}

    async def subscribe(index: int) -> float:
        nonlocal subscribed
        stub = beam_job_api_pb2_grpc.JobServiceStub(channels[index % len(channels)])
        call = stub.GetStateStream(api.GetJobStateRequest(job_id=job_ids[index % len(job_ids)]))
        async for event in call:
            if event.state == api.JobState.STOPPED:
                subscribed += 1
                if subscribed == subscribers:
                    all_subscribed.set()
            if event.state in terminal:
                delay = time.time() - event.timestamp.ToNanoseconds() / 1e9
                call.cancel()
                return delay
        raise RuntimeError("a stream ended before its job")

    waiting = [asyncio.create_task(subscribe(index)) for index in range(subscribers)]
    await all_subscribed.wait()
    run_stub = beam_job_api_pb2_grpc.JobServiceStub(channels[0])
    await asyncio.gather(
        *(run_stub.Run(api.RunJobRequest(preparation_id=job_id)) for job_id in job_ids)
    )
    delays = await asyncio.gather(*waiting)
    for channel in channels:
        await channel.close()
    return list(delays)


def fan_out(subscribers: int, jobs: int) -> dict[str, float]:
    port = _free_port()
    # The jobs run at once, each holding one of the local user's concurrent-jobs slots, and
    # every subscriber's stream is one of the local user's open streams.
    defaults = Quotas()
    quotas = {
        "BEAMJOBS_QUOTA_CONCURRENT_JOBS": str(max(jobs, defaults.concurrent_jobs)),
        "BEAMJOBS_QUOTA_STREAMS": str(max(subscribers, defaults.streams_per_principal)),
    }
    server = _start("beamjobs", port, quotas)
    endpoint = f"localhost:{port}"
    try:
        pipeline = beam.Pipeline()
        _ = pipeline | beam.Create([1]) | beam.Map(str)
        proto = pipeline.to_runner_api()
        for env in proto.components.environments.values():
            env.urn, env.payload = EMBEDDED, b""
            del env.dependencies[:]
        with grpc.insecure_channel(endpoint) as channel:
            stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
            request = api.PrepareJobRequest(pipeline=proto, job_name="fan-out")
            job_ids = [stub.Prepare(request).preparation_id for _ in range(jobs)]
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")
        rss_before = _memory_kib(server.pid, "VmRSS")
        cpu_before, started = _cpu_seconds(server.pid), time.perf_counter()
        delays = asyncio.run(_fan_out(endpoint, job_ids, subscribers))
        cpu = _cpu_seconds(server.pid) - cpu_before
        wall = time.perf_counter() - started
        return {
            "delay_p50_ms": _percentile(delays, 0.50) * 1000,
            "delay_p99_ms": _percentile(delays, 0.99) * 1000,
            "delay_max_ms": max(delays) * 1000,
            "first_to_last_ms": (max(delays) - min(delays)) * 1000,
            "shim_peak_rss_mb": _memory_kib(server.pid, "VmHWM") / 1024,
            "shim_rss_growth_mb": (_memory_kib(server.pid, "VmHWM") - rss_before) / 1024,
            "shim_cpu_s": cpu,
            "shim_cpu_percent_of_one_core": 100 * cpu / wall,
            "wall_s": wall,
        }
    finally:
        _stop(server)


def main() -> None:
    # Stopped (a timeout's SIGTERM), the servers started are stopped too, by their `finally`.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10, help="sequential jobs for the median")
    parser.add_argument("--get-state-calls", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--concurrent-jobs", type=int, default=20)
    parser.add_argument("--artifact-mb", type=int, default=200)
    parser.add_argument(
        "--heavy-rounds", type=int, default=5, help="runs of the CPU-heavy pipeline for its median"
    )
    parser.add_argument(
        "--subscribers",
        type=int,
        nargs="+",
        default=[200, 1000],
        help="run the fan-out for each number of subscribers",
    )
    parser.add_argument(
        "--fan-out-jobs",
        type=int,
        nargs="+",
        default=[1, 5, 20],
        help="run the fan-out once per number of jobs (the subscribers spread over them)",
    )
    parser.add_argument(
        "--only", choices=("jobs", "staging", "fan-out"), help="run one part of the benchmark"
    )
    args = parser.parse_args()
    if args.only in (None, "jobs"):
        compare_jobs(args)
    if args.only in (None, "staging"):
        print(f"\nstaging one {args.artifact_mb} MB artifact with the SDK's staging client:")
        for name in ("beamjobs", "LocalJobServicer"):
            growth, seconds = staging_memory(name, args.artifact_mb)
            print(f"  {name:<18} server peak RSS growth {growth:7.1f} MB   {seconds:6.2f} s")
    for subscribers in args.subscribers if args.only in (None, "fan-out") else []:
        print(
            f"\n{subscribers} GetStateStream subscribers on one shim, spread over N jobs "
            "that then run at once (delay: terminal state written → delivered):"
        )
        runs = {jobs: fan_out(subscribers, jobs) for jobs in args.fan_out_jobs}
        print(f"  {'N jobs':<30}" + "".join(f"{jobs:>10}" for jobs in runs))
        for metric in next(iter(runs.values())):
            print(f"  {metric:<30}" + "".join(f"{run[metric]:>10.1f}" for run in runs.values()))


def compare_jobs(args: argparse.Namespace) -> None:
    results = measure_side_by_side(args)
    ours = results["beamjobs"]
    peers = [name for name in SERVERS if name != "beamjobs"]
    print(
        f"\n{'metric':<28}"
        + "".join(f"{name:>18}" for name in SERVERS)
        + "".join(f"{'ours/' + name:>22}" for name in peers)
    )
    for metric in ours:
        print(
            f"{metric:<28}"
            + "".join(f"{results[name][metric]:>18.3f}" for name in SERVERS)
            + "".join(f"{ours[metric] / results[name][metric]:>22.2f}" for name in peers)
        )
    cores = os.cpu_count() or 1
    least = min(results[name]["client_cpu_s_per_job"] for name in SERVERS)
    print(
        f"\nThe SDK client alone (its process and its pip freeze) uses at least "
        f"{least:.2f} CPU s per job: on this machine's {cores} cores, clients and servers "
        f"together cannot exceed {cores / least:.2f} jobs/s, whatever the server."
    )
    print(
        "\n(lower is better for times and latencies, higher for jobs/s; "
        f"{args.jobs} sequential jobs, {args.get_state_calls} GetState calls, "
        f"{args.concurrent_jobs} jobs over {args.clients} concurrent clients; trivial pipeline, "
        "EMBEDDED environment (Prism: LOOPBACK, so its client also runs the user code), every "
        "server on this machine, measured alternately; nan: not measured)"
    )


if __name__ == "__main__":
    main()
