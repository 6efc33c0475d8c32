"""`make bench`: Beamjobs against Beam's own LocalJobServicer, driven by the same client (the
Beam Python SDK's PortableRunner) in one run, on this machine.

Prints, for each server: the median submit→DONE of a trivial pipeline, GetState p50/p99, and
jobs/s with 4 concurrent clients; then the ratios ours/peer. Then, for each server, how much its
resident memory grows while an SDK stages one 200 MB artifact to it.
"""

from __future__ import annotations

import argparse
import os
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

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = "beam:env:embedded_python:v1"


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


def _start(name: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    if name == "beamjobs":
        command = [
            "-m",
            "beamjobs.cli",
            "serve",
            "--port",
            str(port),
            "--template",
            "template.yaml",
            *extra,
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


def _run_trivial_pipeline(endpoint: str) -> tuple[float, str]:
    """Build, submit and wait for a trivial pipeline; seconds from submit to DONE, and job id."""
    options = PipelineOptions(
        ["--runner=PortableRunner", f"--job_endpoint={endpoint}", f"--environment_type={EMBEDDED}"]
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
        started = time.time()
        stub.Run(api.RunJobRequest(preparation_id=prepared.preparation_id))
        for event in states:
            if event.state == api.JobState.RUNNING:
                running = event.timestamp.ToNanoseconds() / 1e9
            if event.state in (api.JobState.DONE, api.JobState.FAILED):
                return running - started
    raise RuntimeError("the job never ended")


def _cpu_heavy_pipeline(endpoint: str, workers: int) -> float:
    """Seconds from submit to DONE of a CPU-bound pipeline run by `workers` SDK processes."""
    options = PipelineOptions(
        [
            "--runner=PortableRunner",
            f"--job_endpoint={endpoint}",
            f"--environment_type={EMBEDDED}",
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


def measure(name: str, args: argparse.Namespace) -> dict[str, float]:
    port = _free_port()
    endpoint = f"localhost:{port}"
    server = _start(name, port)
    try:
        _run_trivial_pipeline(endpoint)  # warm-up: first-use costs on both sides
        runs = [_run_trivial_pipeline(endpoint) for _ in range(args.jobs)]
        job_id = runs[-1][1]
        with grpc.insecure_channel(endpoint) as channel:
            stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
            latencies = []
            for _ in range(args.get_state_calls):
                started = time.perf_counter()
                stub.GetState(api.GetJobStateRequest(job_id=job_id))
                latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda _: _run_trivial_pipeline(endpoint), range(args.concurrent_jobs)))
        throughput = args.concurrent_jobs / (time.perf_counter() - started)
        run_to_running = [_run_to_running(endpoint) for _ in range(args.jobs)]
        one_worker = _cpu_heavy_pipeline(endpoint, 1)
        two_workers = _cpu_heavy_pipeline(endpoint, 2)
    finally:
        _stop(server)
    return {
        "submit_to_done_median_s": statistics.median(t for t, _ in runs),
        "get_state_p50_ms": _percentile(latencies, 0.50) * 1000,
        "get_state_p99_ms": _percentile(latencies, 0.99) * 1000,
        f"jobs_per_s_{args.clients}_clients": throughput,
        "run_to_running_median_ms": statistics.median(run_to_running) * 1000,
        "cpu_heavy_speedup_2_vs_1": one_worker / two_workers,
    }


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
    """Our shim runs against an embedded AWS in a process of its own: S3's copy of the bytes
    must not count as the shim's memory."""
    aws: subprocess.Popen[bytes] | None = None
    extra: list[str] = []
    if name == "beamjobs":
        aws_port = _free_port()
        aws = subprocess.Popen(
            [sys.executable, "-m", "beamjobs.cli", "aws", "--port", str(aws_port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(aws, aws_port)
        extra = ["--aws-endpoint", f"http://127.0.0.1:{aws_port}"]
    port = _free_port()
    server = _start(name, port, *extra)
    try:
        return _stage_one_artifact(f"localhost:{port}", server.pid, size_mb)
    finally:
        _stop(server)
        if aws is not None:
            _stop(aws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10, help="sequential jobs for the median")
    parser.add_argument("--get-state-calls", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--concurrent-jobs", type=int, default=20)
    parser.add_argument("--artifact-mb", type=int, default=200)
    parser.add_argument("--only", choices=("jobs", "staging"), help="run one part of the benchmark")
    args = parser.parse_args()
    if args.only != "staging":
        compare_jobs(args)
    if args.only != "jobs":
        print(f"\nstaging one {args.artifact_mb} MB artifact with the SDK's staging client:")
        for name in ("beamjobs", "LocalJobServicer"):
            growth, seconds = staging_memory(name, args.artifact_mb)
            print(f"  {name:<18} server peak RSS growth {growth:7.1f} MB   {seconds:6.2f} s")


def compare_jobs(args: argparse.Namespace) -> None:
    results = {name: measure(name, args) for name in ("beamjobs", "LocalJobServicer")}
    ours, peer = results["beamjobs"], results["LocalJobServicer"]
    print(f"\n{'metric':<28}{'beamjobs':>12}{'LocalJobServicer':>18}{'ours/peer':>11}")
    for metric in ours:
        ratio = ours[metric] / peer[metric]
        print(f"{metric:<28}{ours[metric]:>12.3f}{peer[metric]:>18.3f}{ratio:>11.2f}")
    print(
        "\n(lower is better for times and latencies, higher for jobs/s; "
        f"{args.jobs} sequential jobs, {args.get_state_calls} GetState calls, "
        f"{args.concurrent_jobs} jobs over {args.clients} concurrent clients; trivial pipeline, "
        "EMBEDDED environment, both servers on this machine)"
    )


if __name__ == "__main__":
    main()
