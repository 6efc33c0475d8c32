"""A write that AWS applied but whose response was lost: botocore retries it, the condition
then fails on the writer's own item, and the writer must know it as its own (not a rival's)."""

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.domain.states import JobState
from tests.integration.conftest import make_job, pipeline_bytes
from tests.jobstates import advance


def _puts(state=None, sk=None, messages=False):
    def matches(body):
        item = body.get("Item", {})
        if state is not None and item.get("state", {}).get("S") != state:
            return False
        if sk is not None and item.get("sk", {}).get("S") != sk:
            return False
        return not messages or "messages" in item

    return matches


def _prepare(stub):
    return stub.Prepare(api.PrepareJobRequest(pipeline=pipeline_bytes(), job_name="job"))


def test_lost_response_on_runs_starting_write_still_starts_the_job_once(channel, executor, faults):
    # Given a prepared job, and AWS losing the response to the put of its STARTING event
    stub = job_api_pb2_grpc.JobServiceStub(channel)
    job_id = _prepare(stub).preparation_id
    faults.add("PutItem", "lose_response", when=_puts(state="STARTING"))
    # When it is run
    stub.Run(api.RunJobRequest(preparation_id=job_id))
    # Then the run succeeded: the execution was started once, and every view says STARTING
    assert faults.fired == [("PutItem", "lose_response")]
    assert executor.started == [job_id]
    assert stub.GetState(api.GetJobStateRequest(job_id=job_id)).state == api.JobState.STARTING
    [listed] = [j for j in stub.GetJobs(api.GetJobsRequest()).job_info if j.job_id == job_id]
    assert listed.state == api.JobState.STARTING


def test_lost_response_on_a_message_batch_stores_it_once(stores, faults):
    # Given a job, and AWS losing the response to the put of a message batch
    stores.jobs.create(make_job("lost-messages"))
    faults.add("PutItem", "lose_response", when=_puts(messages=True))
    # When messages are appended
    Jobs(stores.jobs).say("lost-messages", [Message("JOB_MESSAGE_BASIC", "once", 1.0)])
    # Then they are stored once
    texts = [m.text for e in stores.jobs.events("lost-messages") for m in e.messages]
    assert faults.fired and texts == ["once"]


def test_lost_response_on_prepares_record_put_prepares_the_job(channel, faults):
    # Given AWS losing the response to the put of a new job's record
    stub = job_api_pb2_grpc.JobServiceStub(channel)
    faults.add("PutItem", "lose_response", when=_puts(sk="job"))
    # When a job is prepared
    job_id = _prepare(stub).preparation_id
    # Then Prepare answered, and the job exists once, STOPPED
    assert faults.fired == [("PutItem", "lose_response")]
    assert stub.GetState(api.GetJobStateRequest(job_id=job_id)).state == api.JobState.STOPPED
    assert [j.job_id for j in stub.GetJobs(api.GetJobsRequest()).job_info].count(job_id) == 1


def test_lost_response_on_a_final_state_write_keeps_that_state(stores, faults):
    # Given a running job, and AWS losing the response to the put of its DONE event
    stores.jobs.create(make_job("lost-done"))
    advance(stores.jobs, "lost-done", JobState.STARTING)
    advance(stores.jobs, "lost-done", JobState.RUNNING)
    faults.add("PutItem", "lose_response", when=_puts(state="DONE"))
    # When the worker records DONE
    done = advance(stores.jobs, "lost-done", JobState.DONE)
    # Then DONE is the job's one terminal state, recorded once
    assert faults.fired and done.state is JobState.DONE
    states = [e.state for e in stores.jobs.events("lost-done") if e.state is not None]
    assert states == [JobState.STOPPED, JobState.STARTING, JobState.RUNNING, JobState.DONE]
