"""A state is two writes: the event (the truth) and its projection onto the job's record (for
listing and the active index). A throttle, timeout or kill between them must neither fail the
transition that happened nor leave the record behind for good. Readers answer from the log and
never write (their roles may not); the job's next writer, or the reconciler, repairs it."""

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc
from beamjobs.app.reconcile import fail_lost_jobs
from beamjobs.aws import clients
from beamjobs.aws.dynamodb_store import DynamoJobStore
from beamjobs.domain.executor import Leases
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.domain.states import JobState
from tests.integration.conftest import Clock, make_job, pipeline_bytes
from tests.jobstates import Work, advance


def _projection_of(state):
    return lambda body: body.get("ExpressionAttributeValues", {}).get(":state") == {"S": state}


def test_a_lost_projection_of_starting_still_starts_the_job_and_is_repaired(
    channel, stores, executor, faults
):
    # Given a prepared job, and all 6 attempts botocore makes to project its STARTING onto the
    # record failing
    stub = job_api_pb2_grpc.JobServiceStub(channel)
    job_id = stub.Prepare(
        api.PrepareJobRequest(pipeline=pipeline_bytes(), job_name="job")
    ).preparation_id
    faults.add("UpdateItem", "fail", times=6, when=_projection_of("STARTING"))
    # When it is run, Run succeeds and starts the work (the event is written: it happened)
    stub.Run(api.RunJobRequest(preparation_id=job_id))
    assert faults.fired.count(("UpdateItem", "fail")) == 6
    assert executor.started == [job_id]
    # Then a reader of the job sees STARTING, from its log
    assert stub.GetState(api.GetJobStateRequest(job_id=job_id)).state == api.JobState.STARTING
    # And the job's next writer (its worker's first message) repairs the record for the listing
    Jobs(stores.jobs).say(job_id, [Message("JOB_MESSAGE_BASIC", "starting", 1.0)])
    [listed] = [j for j in stub.GetJobs(api.GetJobsRequest()).job_info if j.job_id == job_id]
    assert listed.state == api.JobState.STARTING


def test_a_lost_projection_of_done_is_repaired_by_the_reconciler_never_failed(settings, faults):
    # Given a running job whose DONE is written but never projected (the record says RUNNING,
    # and the job stays in the active index)
    clock = Clock(1000.0)
    jobs = DynamoJobStore(
        clients.client("dynamodb", settings), settings.table_name, item_lifetime=86_400, clock=clock
    )
    jobs.create(make_job("finished"))
    advance(jobs, "finished", JobState.STARTING)
    advance(jobs, "finished", JobState.RUNNING)
    faults.add("UpdateItem", "fail", times=6, when=_projection_of("DONE"))
    advance(jobs, "finished", JobState.DONE)
    assert [j.job_id for j in jobs.active_jobs()] == ["finished"]
    # When the reconciler finds it silent past its lease
    clock.now += 100
    settled = fail_lost_jobs(jobs, Work(), Leases(30, 900, 900))
    # Then it is not settled: it stays DONE, its one terminal state, everywhere; and it left
    # the active index
    assert settled == {}
    terminal = [e.state for e in jobs.events("finished") if e.state is not None][-1]
    assert terminal is JobState.DONE
    assert [j.state for j in jobs.list_jobs() if j.job_id == "finished"] == [JobState.DONE]
    assert jobs.active_jobs() == []


def test_a_heartbeat_tells_a_cancel_whose_projection_was_lost(settings, faults):
    # Given a running job whose CANCELLING is written but never projected onto its record
    jobs = DynamoJobStore(
        clients.client("dynamodb", settings), settings.table_name, item_lifetime=86_400
    )
    jobs.create(make_job("cancelled"))
    advance(jobs, "cancelled", JobState.STARTING)
    advance(jobs, "cancelled", JobState.RUNNING)
    faults.add("UpdateItem", "fail", times=6, when=_projection_of("CANCELLING"))
    advance(jobs, "cancelled", JobState.CANCELLING)
    # Then its worker's next heartbeat learns of the cancel (and stops its work)
    assert Jobs(jobs).beat("cancelled") is JobState.CANCELLING
