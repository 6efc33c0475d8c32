"""Upstream engines: Beamjobs hands a job to another Beam Job API server and mirrors it (states,
messages, metrics) into the job's durable log. Run against two real upstreams, each started
here: Beam's reference job server (`local_job_service_main`) and a second `beamjobs serve`. The
real Beam SDK submits to a Beamjobs in front of them (`serve --engine up=HOST:PORT`)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import apache_beam as beam
import grpc
import pytest
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.portability.api import beam_job_api_pb2_grpc, beam_runner_api_pb2
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from google.protobuf import struct_pb2

from tests.e2e.conftest import EMBEDDED, WORKER_PYTHON, free_port, serve
from tests.e2e.test_cli import beamjobs
from tests.e2e.user_scripts import command

ENGINE = "up"
# The front's lease: an upstream silent this long is lost.
LEASE_SECONDS = 8
HEARTBEAT_SECONDS = 1

# The user's script: a word count whose every step logs (so both upstreams have messages to
# mirror), and that sleeps TICK seconds per word when asked to (for tests that act mid-job).
SCRIPT = textwrap.dedent(
    """
    import logging
    import sys
    import time

    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    LINES = ["the cat sat on the mat", "the dog sat", "a cat ran"]


    class CountWords(beam.DoFn):
        def __init__(self, tick):
            self.tick = tick
            self.words = Metrics.counter("wordcount", "words")

        def process(self, line):
            for word in line.split():
                self.words.inc()
                logging.warning("tick %s", word)
                time.sleep(self.tick)
                yield word


    def main(output, tick, flags):
        pipeline = beam.Pipeline(options=PipelineOptions(flags))
        _ = (
            pipeline
            | beam.Create(LINES)
            | beam.ParDo(CountWords(tick))
            | beam.combiners.Count.PerElement()
            | beam.MapTuple(lambda word, count: f"{word}: {count}")
            | beam.io.WriteToText(output, shard_name_template="")
        )
        result = pipeline.run()
        print("JOB", result._job_id, flush=True)
        print("STATE", result.wait_until_finish(), flush=True)
        counters = result.metrics().query(MetricsFilter().with_name("words"))["counters"]
        # Committed, or attempted where the engine commits none (Beam's Spark job server).
        words = sum(
            counter.attempted if counter.committed is None else counter.committed
            for counter in counters
        )
        print("WORDS", words, flush=True)


    if __name__ == "__main__":
        main(sys.argv[1], float(sys.argv[2]), sys.argv[3:])
    """
)
WORDS = ["the", "cat", "sat", "on", "the", "mat", "the", "dog", "sat", "a", "cat", "ran"]


class ReferenceServer:
    """Beam's own job server, from the workers' virtualenv (it runs EMBEDDED pipelines in
    process), with its staging directory where the test can look."""

    name = "reference"

    def __init__(self, tmp: Path) -> None:
        port = free_port()
        self.staging = tmp / "staging"
        self._log = (tmp / "reference.log").open("w")
        self._process = subprocess.Popen(
            [
                WORKER_PYTHON,
                "-m",
                "apache_beam.runners.portability.local_job_service_main",
                "--port",
                str(port),
                "--staging_dir",
                str(self.staging),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.endpoint = f"localhost:{port}"
        _wait_for_server(self.endpoint)

    def kill(self) -> None:
        self._process.kill()
        self._process.wait()

    def stop(self) -> None:
        if self._process.poll() is None:
            self.kill()
        self._log.close()


class SecondBeamjobs:
    """Another `beamjobs serve`, on an embedded AWS of its own."""

    name = "beamjobs"

    def __init__(self, tmp: Path) -> None:
        port = free_port()
        self._server = serve(tmp, "upstream", port)
        self.endpoint = f"localhost:{port}"

    def kill(self) -> None:
        self._server.popen.kill()
        self._server.popen.wait()

    def stop(self) -> None:
        self._server.stop()


def _wait_for_server(endpoint: str) -> None:
    with grpc.insecure_channel(endpoint) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)


@pytest.fixture(scope="module", params=[ReferenceServer, SecondBeamjobs])
def upstream(request, tmp_path_factory):
    started = request.param(tmp_path_factory.mktemp(request.param.name))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def front(upstream, tmp_path_factory):
    """The Beamjobs the SDK submits to, with the upstream as engine `up`."""
    port = free_port()
    server = serve(
        tmp_path_factory.mktemp("front"),
        "front",
        port,
        "--engine",
        f"{ENGINE}={upstream.endpoint}",
        env={
            "BEAMJOBS_LEASE_SECONDS": str(LEASE_SECONDS),
            "BEAMJOBS_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
        },
    )
    yield f"localhost:{port}"
    server.stop()


def _stubs(endpoint: str):
    channel = grpc.insecure_channel(endpoint)
    return channel, beam_job_api_pb2_grpc.JobServiceStub(channel)


def _submit(
    tmp_path: Path,
    front: str,
    tick: float,
    *flags: str,
    engine: str = ENGINE,
    environment: str = EMBEDDED,
) -> subprocess.Popen[str]:
    """The word count (SCRIPT) submitted to `front` for `engine`, running in the background."""
    args = command(
        tmp_path,
        SCRIPT,
        front,
        f"--environment_type={environment}",
        f"--beamjobs_engine={engine}",
        *flags,
    )
    # The script's own arguments come first: output prefix and seconds per word.
    args[2:2] = [str(tmp_path / "counts.txt"), str(tick)]
    return subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finished(process: subprocess.Popen[str]) -> dict[str, str]:
    out, _ = process.communicate(timeout=240)
    lines = dict(
        line.split(" ", 1)
        for line in out.splitlines()
        if line.startswith(("JOB ", "STATE ", "WORDS "))
    )
    assert "STATE" in lines, out
    return lines


def assert_counted_every_word(result: dict[str, str], tmp_path: Path) -> None:
    """The word count (SCRIPT) ended DONE, its output and its counter right."""
    assert result["STATE"] == "DONE"
    counts = dict(line.split(": ") for line in (tmp_path / "counts.txt").read_text().splitlines())
    assert counts == {word: str(WORDS.count(word)) for word in set(WORDS)}
    assert int(result["WORDS"]) == len(WORDS)


def _job_id(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("JOB "):
            return line.split()[1]
    raise AssertionError("the script printed no job id")


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _summary(front: str, job_id: str) -> dict:
    """The job as `beamjobs jobs describe` shows it (Beamjobs' Jobs service)."""
    done = beamjobs(front, "describe", job_id)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["summary"]


def _logged(front: str, job_id: str) -> list[str]:
    """The texts of the job's messages so far, as `beamjobs jobs logs` shows them."""
    done = beamjobs(front, "logs", job_id)
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["message_text"] for line in done.stdout.splitlines()]


def _messages(job_service, job_id: str) -> list[tuple[str, str]]:
    """The job's messages (id, text), replayed by its message stream after it ended."""
    stream = job_service.GetMessageStream(api.JobMessagesRequest(job_id=job_id), timeout=60)
    return [
        (response.message_response.message_id, response.message_response.message_text)
        for response in stream
        if response.HasField("message_response")
    ]


def _upstream_state(upstream, upstream_id: str) -> int:
    channel, job_service = _stubs(upstream.endpoint)
    with channel:
        return job_service.GetState(api.GetJobStateRequest(job_id=upstream_id), timeout=10).state


def _running_upstream(upstream, front: str, job_id: str) -> str:
    """Wait until the job runs upstream; its id there."""
    upstream_id = _wait(
        lambda: _summary(front, job_id).get("upstream_job_id"), 60, "the upstream job"
    )
    running = lambda: _upstream_state(upstream, upstream_id) == api.JobState.RUNNING  # noqa: E731
    _wait(running, 60, "RUNNING upstream")
    return upstream_id


def _mirror_pids(job_id: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"beamjobs.upstream.mirror" in cmdline and job_id.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def test_a_word_count_with_an_extra_package_runs_upstream_to_done(upstream, front, sdist, tmp_path):
    # Given a word count that stages a package, submitted for the upstream engine
    process = _submit(tmp_path, front, 0, f"--extra_package={sdist}")

    # When it has run
    result = _finished(process)

    # Then it is DONE with the right output and the upstream's counter
    assert_counted_every_word(result, tmp_path)
    job_id = result["JOB"]
    summary = _summary(front, job_id)
    assert summary["engine"] == ENGINE and summary["upstream_job_id"]
    upstream_id = summary["upstream_job_id"]
    channel, job_service = _stubs(front)
    with channel:
        ours = _messages(job_service, job_id)
    # ... the upstream lists the job, DONE
    up_channel, upstream_jobs = _stubs(upstream.endpoint)
    with up_channel:
        listed = {
            info.job_id: info.state for info in upstream_jobs.GetJobs(api.GetJobsRequest()).job_info
        }
        assert listed.get(upstream_id) == api.JobState.DONE
        # ... it got the package's bytes from Beamjobs' staging
        pipeline = upstream_jobs.GetPipeline(api.GetJobPipelineRequest(job_id=upstream_id)).pipeline
        theirs = _messages(upstream_jobs, upstream_id)
    assert hashlib.sha256(sdist.read_bytes()).hexdigest() in _staged_hashes(pipeline)
    # ... and every message the upstream still holds is the job's too, in order, once
    texts = [text for _, text in ours]
    assert theirs, "the upstream holds no messages"
    assert _in_order([text for _, text in theirs], texts)
    assert len(texts) == len(set(ours))
    assert [f"tick {word}" for word in WORDS] == [t for t in texts if t.startswith("tick ")]


def _in_order(some: list[str], every: list[str]) -> bool:
    """Whether `some` are among `every`, in the same order."""
    rest = iter(every)
    return all(text in rest for text in some)


def _staged_hashes(pipeline) -> set[str]:
    """The sha256 of each dependency of the pipeline, as its job server staged them: a URL
    with its hash (Beamjobs), or a file in the staging directory (Beam's reference server)."""
    hashes = set()
    for environment in pipeline.components.environments.values():
        for artifact in environment.dependencies:
            if artifact.type_urn == "beam:artifact:type:url:v1":
                hashes.add(
                    beam_runner_api_pb2.ArtifactUrlPayload.FromString(artifact.type_payload).sha256
                )
            elif artifact.type_urn == "beam:artifact:type:file:v1":
                path = beam_runner_api_pb2.ArtifactFilePayload.FromString(
                    artifact.type_payload
                ).path
                hashes.add(hashlib.sha256(Path(path).read_bytes()).hexdigest())
    return hashes


def test_describe_pipeline_options_names_the_engines(front):
    channel, job_service = _stubs(front)
    with channel:
        described = job_service.DescribePipelineOptions(api.DescribePipelineOptionsRequest())
    [engine] = [o for o in described.options if o.name == "beamjobs_engine"]
    assert "local" in engine.description and ENGINE in engine.description


def _unbounded_pipeline() -> bytes:
    pipeline = beam.Pipeline()
    _ = pipeline | PeriodicImpulse(fire_interval=1) | beam.Map(str)
    return pipeline.to_runner_api().SerializeToString()


def _prepare(front: str, options: dict) -> grpc.RpcError:
    struct = struct_pb2.Struct()
    struct.update(options)
    channel, job_service = _stubs(front)
    with channel, pytest.raises(grpc.RpcError) as refused:
        job_service.Prepare(
            api.PrepareJobRequest(
                pipeline=beam_runner_api_pb2.Pipeline.FromString(_unbounded_pipeline()),
                pipeline_options=struct,
                job_name="job",
            )
        )
    return refused.value


def test_an_unbounded_pipeline_without_a_streaming_engine_is_refused_at_prepare(front):
    # Given a streaming pipeline that names no engine, on a deployment with no streaming engine
    # When it is prepared
    refused = _prepare(front, {})
    # Then Prepare refuses it, naming the option that would choose one
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--beamjobs_engine" in refused.details() and ENGINE in refused.details()
    # ... and an engine that does not exist is the client's mistake, the engines listed
    unknown = _prepare(front, {"beam:option:beamjobs_engine:v1": "spark"})
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "local" in unknown.details() and ENGINE in unknown.details()


def test_cancel_stops_the_upstream_job(upstream, front, tmp_path):
    # Given a slow job running upstream
    process = _submit(tmp_path, front, 3)
    job_id = _job_id(process)
    upstream_id = _running_upstream(upstream, front, job_id)
    channel, job_service = _stubs(front)
    with channel:
        # When it is cancelled through Beamjobs
        job_service.Cancel(api.CancelJobRequest(job_id=job_id))

        # Then it is CANCELLED here and there
        _wait(lambda: _summary(front, job_id)["state"] == "CANCELLED", 30, "CANCELLED")
    assert _upstream_state(upstream, upstream_id) == api.JobState.CANCELLED
    out, _ = process.communicate(timeout=60)
    assert "in state CANCELLED" in out  # the SDK saw it end so


def test_a_killed_mirror_resumes_with_nothing_lost_or_repeated(upstream, front, tmp_path):
    # Given a job that logs a message per word, a second apart, running upstream
    process = _submit(tmp_path, front, 1)
    job_id = _job_id(process)
    mirrored = lambda: sum(text.startswith("tick ") for text in _logged(front, job_id))  # noqa: E731
    _wait(lambda: mirrored() >= 3, 90, "three words mirrored")

    # When its mirror is killed mid-job
    [pid] = _mirror_pids(job_id)
    os.kill(pid, signal.SIGKILL)

    # Then a new mirror takes over, and the job ends DONE
    _wait(lambda: set(_mirror_pids(job_id)) - {pid}, 30, "a new mirror")
    assert _finished(process)["STATE"] == "DONE"
    channel, job_service = _stubs(front)
    with channel:
        ours = _messages(job_service, job_id)
    # ... with every word's message once, in order
    ticks = [text for _, text in ours if text.startswith("tick ")]
    assert ticks == [f"tick {word}" for word in WORDS]
    assert not [text for _, text in ours if "were not mirrored" in text]


def test_an_upstream_that_dies_fails_the_job_as_engine_lost(upstream, front, tmp_path):
    # Given a slow job running upstream (last: the upstream does not come back)
    process = _submit(tmp_path, front, 3)
    job_id = _job_id(process)
    _running_upstream(upstream, front, job_id)

    # When the upstream engine dies
    upstream.kill()
    killed = time.monotonic()

    # Then the job fails within the lease, and says the engine was lost and why
    _wait(lambda: _summary(front, job_id)["state"] == "FAILED", LEASE_SECONDS + 30, "FAILED")
    # (the lease runs from the mirror's last answer, at most a heartbeat before the kill)
    assert time.monotonic() - killed >= LEASE_SECONDS - HEARTBEAT_SECONDS
    errors = [text for text in _logged(front, job_id) if "engine lost" in text]
    assert errors and upstream.endpoint in errors[-1]
    process.kill()
    process.wait()
