"""Restarting the shim against the same embedded AWS loses nothing."""

import apache_beam as beam
import grpc
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.portability.api import beam_job_api_pb2_grpc

from tests.e2e.conftest import Process, free_port, options, serve


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
