"""Restarting the shim against the same embedded AWS loses nothing; stopping one that owns its
embedded AWS leaves no worker behind."""

import signal
import time
from pathlib import Path

import apache_beam as beam
import grpc
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.portability.api import beam_job_api_pb2_grpc
from apache_beam.runners.runner import PipelineState

from tests.e2e import user_code
from tests.e2e.conftest import EMBEDDED, Process, alive, free_port, options, serve


def _observe(endpoint, job_id):
    with grpc.insecure_channel(endpoint) as channel:
        stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
        jobs = sorted(
            (i.job_id, i.job_name, i.state) for i in stub.GetJobs(api.GetJobsRequest()).job_info
        )
        state = stub.GetState(api.GetJobStateRequest(job_id=job_id))
        history = [
            (e.state, e.timestamp.ToNanoseconds())
            for e in stub.GetStateStream(api.GetJobStateRequest(job_id=job_id))
        ]
        messages = [
            r.SerializeToString()
            for r in stub.GetMessageStream(api.JobMessagesRequest(job_id=job_id))
        ]
    return jobs, (state.state, state.timestamp.ToNanoseconds()), history, messages


def test_a_restarted_shim_serves_the_same_jobs_and_history(tmp_path):
    aws_port, shim_port = free_port(), free_port()
    aws = Process(
        ["aws", "--port", str(aws_port), "--template", "template.yaml"], tmp_path / "aws.log"
    )
    aws.wait_for_port(aws_port)
    aws_endpoint = ["--aws-endpoint", f"http://127.0.0.1:{aws_port}"]
    try:
        shim = serve(tmp_path, "first", shim_port, *aws_endpoint)
        endpoint = f"localhost:{shim_port}"
        pipeline = beam.Pipeline(options=options(endpoint, "LOOPBACK", "--job_name=survivor"))
        _ = pipeline | beam.Create(["a", "b"]) | beam.Map(str.upper)
        result = pipeline.run()
        result.wait_until_finish()
        before = _observe(endpoint, result._job_id)
        shim.stop()

        shim = serve(tmp_path, "second", shim_port, *aws_endpoint)
        after = _observe(endpoint, result._job_id)
        shim.stop()
    finally:
        aws.stop()

    jobs, state, history, messages = after
    assert after == before
    assert (result._job_id, "survivor", api.JobState.DONE) in jobs
    assert state[0] == api.JobState.DONE
    assert [s for s, _ in history] == [
        api.JobState.STOPPED,
        api.JobState.STARTING,
        api.JobState.RUNNING,
        api.JobState.DONE,
    ]
    assert messages  # the message stream replays (at least the states) after the restart too


def _descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    return [d for c in map(int, children) for d in (c, *_descendants(c))]


def test_stopping_serve_with_its_embedded_aws_stops_its_running_workers(tmp_path):
    # Given `serve` with the embedded AWS it started, running a job that sleeps for minutes
    port = free_port()
    server = serve(tmp_path, "owner", port)
    endpoint = f"localhost:{port}"
    try:
        pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED))
        _ = pipeline | beam.Create([1]) | beam.Map(user_code.sleep_long)
        result = pipeline.run()
        _wait_until_running(endpoint, result._job_id)
        workers = _descendants(server.popen.pid)
        assert workers
    finally:
        # When it stops (as Ctrl-C or SIGTERM stops `make run`)
        server.stop()
    # Then no worker of it is left running its job with nothing to report to
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, [p for p in workers if alive(p)]
        time.sleep(0.2)


def test_a_shim_replaced_while_the_sdk_waits_lets_the_sdk_see_its_job_done(tmp_path):
    # Given two shims on one embedded AWS, the first serving an SDK that waits on a job
    aws_port, port = free_port(), free_port()
    aws = Process(
        ["aws", "--port", str(aws_port), "--template", "template.yaml"], tmp_path / "aws.log"
    )
    aws.wait_for_port(aws_port)
    aws_endpoint = ["--aws-endpoint", f"http://127.0.0.1:{aws_port}"]
    old = serve(tmp_path, "old", port, *aws_endpoint)
    new = None
    try:
        endpoint = f"localhost:{port}"
        pipeline = beam.Pipeline(options=options(endpoint, "LOOPBACK", "--job_name=replaced"))
        _ = pipeline | beam.Create([1]) | beam.Map(user_code.sleep_briefly)
        result = pipeline.run()
        _wait_until_running(endpoint, result._job_id)
        # When a new shim takes the port over (as a deploy's new task takes the balancer's
        # traffic) and the old one is told to stop mid-job
        new = serve(tmp_path, "new", port, *aws_endpoint)
        _wait_for_line(new.log, "Beamjobs Job API on")
        old.popen.send_signal(signal.SIGTERM)
        # Then the SDK's wait ends DONE: the old shim's streams followed the job to its end
        assert result.wait_until_finish() == PipelineState.DONE
        old.popen.wait(30)
        assert old.popen.returncode == 0
        # And the new shim serves the job
        with grpc.insecure_channel(endpoint) as channel:
            stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
            request = api.GetJobStateRequest(job_id=result._job_id)
            assert stub.GetState(request).state == api.JobState.DONE
    finally:
        old.stop()
        if new is not None:
            new.stop()
        aws.stop()


def _wait_until_running(endpoint: str, job_id: str) -> None:
    with grpc.insecure_channel(endpoint) as channel:
        stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
        request = api.GetJobStateRequest(job_id=job_id)
        deadline = time.monotonic() + 60
        while stub.GetState(request).state != api.JobState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def _wait_for_line(log: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
