"""`make run` keeps its history (`beamjobs serve --state-dir`): a job run before a restart is
listed after it, DONE, with its messages and metrics; a job whose server was killed mid-run
ends in a true state when the server comes back, never stuck RUNNING, and its worker stops
with the killed server (whose embedded AWS it reported to)."""

import signal

import apache_beam as beam
import grpc
from apache_beam.metrics import Metrics
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.portability.api import beam_job_api_pb2_grpc
from apache_beam.runners.runner import PipelineState

from tests.e2e import user_code
from tests.e2e.conftest import EMBEDDED, free_port, options, serve
from tests.e2e.test_restart import _observe, _wait_until_running
from tests.e2e.test_upstream_engines import _wait
from tests.processes import gone


class Counted(beam.DoFn):
    def __init__(self):
        self.seen = Metrics.counter("kept", "seen")

    def process(self, element):
        self.seen.inc()
        yield element


def _metrics(endpoint, job_id):
    with grpc.insecure_channel(endpoint) as channel:
        stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
        answer = stub.GetJobMetrics(api.GetJobMetricsRequest(job_id=job_id))
    return sorted(info.SerializeToString() for info in answer.metrics.committed)


def test_a_job_is_kept_across_a_restart_with_its_messages_and_metrics(tmp_path):
    state = ["--state-dir", str(tmp_path / "state")]
    port = free_port()
    endpoint = f"localhost:{port}"
    server = serve(tmp_path, "first", port, *state)
    try:
        pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED, "--job_name=kept"))
        _ = pipeline | beam.Create(["a", "b", "c"]) | beam.ParDo(Counted())
        result = pipeline.run()
        assert result.wait_until_finish() == PipelineState.DONE
        before = _observe(endpoint, result._job_id), _metrics(endpoint, result._job_id)
    finally:
        # As Ctrl-C stops `make run`.
        server.popen.send_signal(signal.SIGINT)
        server.popen.wait(30)

    server = serve(tmp_path, "second", port, *state)
    try:
        after = _observe(endpoint, result._job_id), _metrics(endpoint, result._job_id)
    finally:
        server.stop()
    assert after == before
    (jobs, job_state, _, messages), metrics = after
    assert (result._job_id, "kept", api.JobState.DONE) in jobs
    assert job_state[0] == api.JobState.DONE
    assert messages
    assert any(b"seen" in info for info in metrics)  # the job's own counter, kept


def test_a_job_whose_server_was_killed_mid_run_ends_failed_when_it_comes_back(tmp_path):
    state = ["--state-dir", str(tmp_path / "state")]
    port = free_port()
    endpoint = f"localhost:{port}"
    server = serve(tmp_path, "killed", port, *state)
    noted = tmp_path / "worker.pid"
    try:
        pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED, "--job_name=cut-short"))
        _ = pipeline | beam.Create([1]) | beam.Map(user_code.sleep_long_noting_pid, str(noted))
        result = pipeline.run()
        _wait_until_running(endpoint, result._job_id)
        _wait(noted.exists, 60, "the job's code to run")
    finally:
        server.popen.send_signal(signal.SIGKILL)
        server.popen.wait(30)
    # Its worker stopped with it (the AWS it reported to was the server's own)
    worker = int(noted.read_text())
    _wait(lambda: gone(worker), 30, "the worker to stop")

    server = serve(tmp_path, "back", port, *state)
    try:
        with grpc.insecure_channel(endpoint) as channel:
            stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
            request = api.GetJobStateRequest(job_id=result._job_id)
            assert stub.GetState(request).state == api.JobState.FAILED
            said = [
                r.message_response.message_text
                for r in stub.GetMessageStream(api.JobMessagesRequest(job_id=result._job_id))
                if r.HasField("message_response")
            ]
        assert any("the server stopped while the job was active" in text for text in said)
    finally:
        server.stop()
