"""The built-in prism engine: Beam's Prism runner (built by `make engines` from Beam's Go module),
started on loopback by each job's mirror, runs what FnApiRunner cannot: unbounded
PCollections, TestStream, processing-time timers. The real Beam SDK submits to a `beamjobs
serve --prism`, which sends streaming pipelines to Prism without being told."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import apache_beam as beam
import grpc
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.portability.api import beam_job_api_pb2_grpc
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import trigger, userstate, window
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils import timestamp

from tests.e2e.conftest import EMBEDDED, ROOT, WORKER_PYTHON, free_port, options, serve
from tests.e2e.test_cli import beamjobs
from tests.e2e.test_upstream_engines import _logged, _summary, _wait
from tests.e2e.user_scripts import PACKAGE
from tests.processes import gone, processes_running

PRISM = ROOT / ".cache" / "engines" / "bin" / "prism"
PYTHON_BOOT = ROOT / ".cache" / "engines" / "python-boot" / "container"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> str:
    port = free_port()
    server = serve(
        tmp_path_factory.mktemp("prism"),
        "prism",
        port,
        "--prism",
        str(PRISM),
        "--python-boot",
        str(PYTHON_BOOT),
    )
    yield f"localhost:{port}"
    server.stop()


def _options(endpoint: str, *extra: str) -> PipelineOptions:
    return PipelineOptions(
        [
            "--runner=PortableRunner",
            f"--job_endpoint={endpoint}",
            "--environment_type=LOOPBACK",
            *extra,
        ]
    )


def _run(pipeline: beam.Pipeline) -> str:
    """Run to the end; the job's id, once it is DONE."""
    result = pipeline.run()
    assert result.wait_until_finish() == "DONE"
    return result._job_id


def test_sliding_windows_over_an_unbounded_source_run_on_prism(endpoint):
    # Given an unbounded source (PeriodicImpulse) of 9 timestamped elements, in sliding windows
    pipeline = beam.Pipeline(options=_options(endpoint))
    data = [(timestamp.Timestamp(i), i) for i in range(1, 10)]
    grouped = (
        pipeline
        | PeriodicImpulse(data=data, fire_interval=0.05)
        | beam.WithKeys(0)
        | beam.WindowInto(window.SlidingWindows(6, 3))
        | beam.GroupByKey()
        | beam.MapTuple(lambda key, values: (key, sorted(values)))
    )
    expected = [(0, [1, 2]), (0, [1, 2, 3, 4, 5]), (0, [3, 4, 5, 6, 7, 8]), (0, [6, 7, 8, 9])]
    assert_that(grouped, equal_to([*expected, (0, [9])]))
    # When it runs (no engine named), then it is DONE, on Prism
    job_id = _run(pipeline)
    assert _summary(endpoint, job_id)["engine"] == "prism"


def test_an_embedded_pipeline_runs_on_prism_with_its_staged_package(endpoint, sdist):
    # Given a streaming pipeline whose environment is EMBEDDED (which Prism runs no harness of),
    # and whose code needs a package it stages
    pipeline = beam.Pipeline(
        options=options(endpoint, EMBEDDED, "--streaming", f"--extra_package={sdist}")
    )
    events = TestStream().add_elements(["a", "b"]).advance_watermark_to_infinity()
    shouted = pipeline | events | beam.Map(lambda word: __import__(PACKAGE).shout(word))
    assert_that(shouted, equal_to(["A!", "B!"]))
    # When it runs, then Prism ran it DONE: a PROCESS harness of Beam's boot installed the package
    job_id = _run(pipeline)
    assert _summary(endpoint, job_id)["engine"] == "prism"
    # ... in the job's own virtualenv, not in the workers' environment
    installed = subprocess.run(
        [WORKER_PYTHON, "-c", f"import {PACKAGE}"], capture_output=True, text=True
    )
    assert installed.returncode != 0, "the staged package leaked into the workers' environment"


def test_the_sdks_default_docker_environment_runs_on_prism_without_docker(endpoint):
    # Given a streaming pipeline in the SDK's default environment: DOCKER, Beam's Python SDK
    # image of this Beam and Python, which is what the worker image is built FROM
    pipeline = beam.Pipeline(
        options=PipelineOptions(
            ["--runner=PortableRunner", f"--job_endpoint={endpoint}", "--streaming"]
        )
    )
    events = TestStream().add_elements([1, 2, 3]).advance_watermark_to_infinity()
    assert_that(pipeline | events | beam.Map(lambda n: n * 10), equal_to([10, 20, 30]))
    # When it runs, then Prism ran the image's harness as Beam's boot, with no container runtime
    job_id = _run(pipeline)
    done = beamjobs(endpoint, "describe", job_id)
    assert done.returncode == 0, done.stderr
    described = json.loads(done.stdout)
    assert described["summary"]["engine"] == "prism"
    images = {env["container_image"] for env in described["environments"]} - {""}
    assert images == {f"apache/beam_python3.11_sdk:{beam.version.__version__}"}


def test_another_docker_image_on_prism_fails_with_advice(endpoint):
    # Given a streaming pipeline whose DOCKER image is not the workers' own (which Prism could
    # only run in a container)
    old = "apache/beam_python3.11_sdk:2.50.0"
    pipeline = beam.Pipeline(
        options=PipelineOptions(
            [
                "--runner=PortableRunner",
                f"--job_endpoint={endpoint}",
                "--streaming",
                f"--environment_config={old}",
            ]
        )
    )
    _ = pipeline | TestStream().add_elements([1]).advance_watermark_to_infinity()
    # When it runs, then it fails, telling the SDK what runs instead
    result = pipeline.run()
    with pytest.raises(RuntimeError) as failed:
        result.wait_until_finish()
    assert old in str(failed.value) and "LOOPBACK" in str(failed.value)


def test_a_teststream_pipeline_runs_on_prism(endpoint):
    pipeline = beam.Pipeline(options=_options(endpoint, "--streaming"))
    events = (
        TestStream()
        .add_elements([("k", 1), ("k", 2)])
        .advance_watermark_to(10)
        .add_elements([("k", 4)])
        .advance_watermark_to_infinity()
    )
    grouped = (
        pipeline
        | events
        | beam.WindowInto(window.FixedWindows(5))
        | beam.GroupByKey()
        | beam.MapTuple(lambda key, values: (key, sorted(values)))
    )
    assert_that(grouped, equal_to([("k", [1, 2]), ("k", [4])]))
    job_id = _run(pipeline)
    assert _summary(endpoint, job_id)["engine"] == "prism"


class _EventTimeTimers(beam.DoFn):
    """Sets a timer at the element's value and again at twice it (the second set wins), and
    once fired sets it once more at twice its own time: neither reset nor clear."""

    TIMER = userstate.TimerSpec("timer", userstate.TimeDomain.WATERMARK)
    FIRED = userstate.CombiningValueStateSpec("fired", sum)

    def process(self, element, timer=beam.DoFn.TimerParam(TIMER)):
        _, at = element
        timer.set(at)
        timer.set(2 * at)

    @userstate.on_timer(TIMER)
    def fire(
        self,
        at=beam.DoFn.TimestampParam,
        timer=beam.DoFn.TimerParam(TIMER),
        fired=beam.DoFn.StateParam(FIRED),
    ):
        if fired.read() == 0:
            fired.add(1)
            timer.set(timestamp.Timestamp(micros=2 * at.micros))
        yield "fired"


def test_event_time_timers_fire_on_prism(endpoint):
    # Given a stateful DoFn with event-time timers, on Prism by choice
    pipeline = beam.Pipeline(options=_options(endpoint, "--beamjobs_engine=prism"))
    fired = (
        pipeline
        | beam.Create([("k1", 10), ("k2", 100)]).with_output_types(tuple[str, int])
        | beam.ParDo(_EventTimeTimers())
        | beam.Map(lambda word, at=beam.DoFn.TimestampParam: (word, at))
    )
    assert_that(fired, equal_to([("fired", at) for at in (20, 200, 40, 400)]))
    _run(pipeline)


class _ProcessingTimeTimer(beam.DoFn):
    """Buffers a key's elements and emits them when a processing-time timer fires."""

    TIMER = userstate.TimerSpec("flush", userstate.TimeDomain.REAL_TIME)
    BUFFER = userstate.BagStateSpec("buffer", beam.coders.VarIntCoder())

    def process(
        self, element, timer=beam.DoFn.TimerParam(TIMER), buffer=beam.DoFn.StateParam(BUFFER)
    ):
        buffer.add(element[1])
        timer.set(timestamp.Timestamp.now() + 0.5)

    @userstate.on_timer(TIMER)
    def flush(self, buffer=beam.DoFn.StateParam(BUFFER)):
        yield sorted(buffer.read())
        buffer.clear()


def test_a_processing_time_timer_fires_on_prism(endpoint):
    # Given three elements of an unbounded source, buffered by key until a processing-time timer
    pipeline = beam.Pipeline(options=_options(endpoint, "--streaming"))
    data = [(timestamp.Timestamp(i), i) for i in (1, 2, 3)]
    flushed = (
        pipeline
        | PeriodicImpulse(data=data, fire_interval=0.01)
        | beam.WithKeys("k").with_output_types(tuple[str, int])
        | beam.ParDo(_ProcessingTimeTimer())
    )
    # When it runs, then the timer flushed the buffer: every element came out, and only once
    assert_that(flushed | beam.FlatMap(lambda batch: batch), equal_to([1, 2, 3]))
    _run(pipeline)


def _running(jobs, job_id: str):
    """Wait until the job is RUNNING; a function that reads its state."""

    def state():
        return jobs.GetState(api.GetJobStateRequest(job_id=job_id)).state

    _wait(lambda: state() == api.JobState.RUNNING, 120, "RUNNING")
    return state


def _prism_processes() -> set[int]:
    """The pids of the Prism processes this machine runs (started by mirrors)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if command == str(PRISM).encode():
                pids.add(int(entry.name))
    return pids


def test_cancel_stops_a_running_streaming_job_and_its_prism(endpoint):
    # Given a streaming job that never ends by itself, RUNNING on Prism
    before = _prism_processes()
    pipeline = beam.Pipeline(options=_options(endpoint, "--streaming"))
    _ = (
        pipeline
        | PeriodicImpulse(fire_interval=0.2)
        | beam.WindowInto(
            window.GlobalWindows(),
            trigger=trigger.Repeatedly(trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
        )
        | beam.Map(str)
    )
    result = pipeline.run()
    job_id = result._job_id
    with grpc.insecure_channel(endpoint) as channel:
        jobs = beam_job_api_pb2_grpc.JobServiceStub(channel)
        state = _running(jobs, job_id)
        assert _prism_processes() - before, "no Prism runs the job"
        # When it is cancelled
        jobs.Cancel(api.CancelJobRequest(job_id=job_id))
        # Then it ends CANCELLED, here and for the SDK, and its Prism is gone
        _wait(lambda: state() == api.JobState.CANCELLED, 60, "CANCELLED")
    with pytest.raises(RuntimeError, match="in state CANCELLED"):  # as the SDK reports it
        result.wait_until_finish()
    _wait(lambda: not (_prism_processes() - before), 30, "its Prism to stop")


def test_a_killed_server_takes_its_streaming_jobs_mirror_and_prism_with_it(tmp_path):
    # Given a server of its own (with its embedded AWS), and a streaming job RUNNING on Prism
    port = free_port()
    endpoint = f"localhost:{port}"
    server = serve(
        tmp_path, "killed", port, "--prism", str(PRISM), "--python-boot", str(PYTHON_BOOT)
    )
    before = _prism_processes()
    try:
        pipeline = beam.Pipeline(options=_options(endpoint, "--streaming"))
        _ = pipeline | PeriodicImpulse(fire_interval=0.2) | beam.Map(str)
        job_id = pipeline.run()._job_id
        with grpc.insecure_channel(endpoint) as channel:
            _running(beam_job_api_pb2_grpc.JobServiceStub(channel), job_id)
        prisms = _prism_processes() - before
        mirrors = processes_running("beamjobs.upstream.mirror", job_id)
        assert prisms, "no Prism runs the job"
        assert mirrors, "no mirror follows the job"
    finally:
        # When the server is killed (it cannot stop them itself)
        server.popen.send_signal(signal.SIGKILL)
        server.popen.wait(30)
    # Then the job's mirror and its Prism stop too: nothing would ever stop the unbounded job
    _wait(lambda: all(gone(pid) for pid in prisms | mirrors), 30, "the mirror and Prism to stop")


def test_drain_of_a_streaming_job_on_prism_cancels_it_and_says_so(endpoint):
    # Given an endless streaming job RUNNING on Prism (which has no Drain)
    pipeline = beam.Pipeline(options=_options(endpoint, "--streaming"))
    _ = pipeline | PeriodicImpulse(fire_interval=0.2) | beam.Map(str)
    result = pipeline.run()
    job_id = result._job_id
    with grpc.insecure_channel(endpoint) as channel:
        jobs = beam_job_api_pb2_grpc.JobServiceStub(channel)
        state = _running(jobs, job_id)
        # When it is drained
        jobs.Drain(api.DrainJobRequest(job_id=job_id))
        # Then it is cancelled instead, and its messages say why
        _wait(lambda: state() == api.JobState.CANCELLED, 60, "CANCELLED")
    with pytest.raises(RuntimeError, match="in state CANCELLED"):
        result.wait_until_finish()
    assert any("drain" in text.lower() for text in _logged(endpoint, job_id))


def _refuse(word):
    raise ValueError(f"cannot digest {word!r}: the user's own words")


def test_a_failure_on_prism_carries_prisms_cause_to_the_sdk(endpoint):
    # Given a pipeline whose user code raises, on Prism
    pipeline = beam.Pipeline(options=_options(endpoint, "--beamjobs_engine=prism"))
    _ = pipeline | beam.Create(["bad"]) | beam.Map(_refuse)
    # When it runs, then it FAILS with the traceback Prism sends after its FAILED state
    with pytest.raises(RuntimeError, match="cannot digest 'bad': the user's own words"):
        pipeline.run().wait_until_finish()
