"""Each component keeps within the role template.yaml gives it, as AWS enforces it
(tests.iam_policies): readers never write, and the harness itself refuses what AWS would."""

import pytest
from botocore.exceptions import ClientError

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc
from beamjobs.app.reconcile import fail_lost_jobs
from beamjobs.aws import clients
from beamjobs.domain.executor import Leases
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.domain.states import JobState
from tests.iam_policies import acting_as
from tests.integration.conftest import make_job
from tests.jobstates import advance


def _record(settings, job_id):
    item = clients.client("dynamodb", settings).get_item(
        TableName=settings.table_name, Key={"pk": {"S": f"job#{job_id}"}, "sk": {"S": "job"}}
    )["Item"]
    return item["state"]["S"], "active" in item


def _lose_projection(settings, job_id, state):
    """As if the writer of the job's last events had died before projecting them: the record
    says `state` (as of its first event)."""
    clients.client("dynamodb", settings).update_item(
        TableName=settings.table_name,
        Key={"pk": {"S": f"job#{job_id}"}, "sk": {"S": "job"}},
        UpdateExpression="SET #s = :s, seq = :n",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"S": state.name}, ":n": {"N": "1"}},
    )


def test_read_only_roles_answer_a_lagging_job_from_its_log_and_write_nothing(
    settings, stores, channel
):
    stores.jobs.create(make_job("j1"))
    advance(stores.jobs, "j1", JobState.STARTING)
    _lose_projection(settings, "j1", JobState.STOPPED)
    stub = job_api_pb2_grpc.JobServiceStub(channel)
    # GetState: the query function (DynamoDBReadPolicy).
    assert stub.GetState(api.GetJobStateRequest(job_id="j1")).state == api.JobState.STARTING
    # A stream open: the shim (GetItem and Query on the table; UpdateItem of counters only).
    stream = stub.GetStateStream(api.GetJobStateRequest(job_id="j1"), timeout=10)
    assert [next(stream).state for _ in range(2)] == [api.JobState.STOPPED, api.JobState.STARTING]
    stream.cancel()
    assert _record(settings, "j1")[0] == "STOPPED"  # still behind: no reader wrote


def test_the_next_append_of_a_writer_that_read_the_job_behind_repairs_its_record(settings, stores):
    stores.jobs.create(make_job("j1"))
    advance(stores.jobs, "j1", JobState.STARTING)
    _lose_projection(settings, "j1", JobState.STOPPED)
    with acting_as("WorkerFunctionRole"):
        # A message leaves the snapshot as it is: the append repairs only what it read behind.
        Jobs(stores.jobs).say("j1", [Message("JOB_MESSAGE_BASIC", "hello", 1.0)])
    assert _record(settings, "j1") == ("STARTING", True)


def test_the_reconciler_repairs_a_job_still_listed_active_after_it_ended(settings, stores):
    stores.jobs.create(make_job("j1"))
    advance(stores.jobs, "j1", JobState.STARTING, JobState.RUNNING, JobState.DONE)
    _lose_projection(settings, "j1", JobState.RUNNING)
    clients.client("dynamodb", settings).update_item(
        TableName=settings.table_name,
        Key={"pk": {"S": "job#j1"}, "sk": {"S": "job"}},
        UpdateExpression="SET active = :a, state_time = :t",
        ExpressionAttributeValues={":a": {"S": "active"}, ":t": {"N": "0"}},
    )
    assert [job.job_id for job in stores.jobs.active_jobs()] == ["j1"]

    class Running:
        def running(self, job_id):
            return True

    with acting_as("ReconcileFunctionRole"):
        settled = fail_lost_jobs(stores.jobs, Running(), Leases(30, 900, 900))
    assert settled == {}  # nothing to settle: it ended DONE
    assert _record(settings, "j1") == ("DONE", False)
    assert stores.jobs.active_jobs() == []


@pytest.mark.parametrize(
    ("role", "service", "call", "params", "refused"),
    [
        # The shim counts Prepares on counter items and may write nothing else of the table.
        ("ShimTaskRole", "dynamodb", "update_item", {"Key": "counter#prepares"}, False),
        ("ShimTaskRole", "dynamodb", "update_item", {"Key": "job#j1"}, True),
        ("ShimTaskRole", "dynamodb", "query", {"IndexName": "gsi1"}, True),
        ("QueryFunctionRole", "dynamodb", "update_item", {"Key": "job#j1"}, True),
        ("QueryFunctionRole", "dynamodb", "query", {"IndexName": "gsi1"}, False),
        ("ControlFunctionRole", "s3", "put_object", {"Key": "secrets/j1"}, False),
        ("WorkerFunctionRole", "s3", "get_object", {"Key": "secrets/j1"}, True),
        ("QueryFunctionRole", "s3", "put_object", {"Key": "pipelines/p"}, True),
    ],
)
def test_the_harness_refuses_what_the_role_does_not_allow(
    settings, iam_enforcement, role, service, call, params, refused
):
    """The harness can fail: each of these is allowed or refused as AWS would."""
    client = clients.client(service, settings)
    if service == "dynamodb" and call == "update_item":
        request = {
            "TableName": settings.table_name,
            "Key": {"pk": {"S": params["Key"]}, "sk": {"S": "x"}},
            "UpdateExpression": "SET n = :n",
            "ExpressionAttributeValues": {":n": {"N": "1"}},
        }
    elif service == "dynamodb":
        request = {
            "TableName": settings.table_name,
            "IndexName": params["IndexName"],
            "KeyConditionExpression": "gsi1pk = :p",
            "ExpressionAttributeValues": {":p": {"S": "jobs"}},
        }
    else:
        request = {"Bucket": settings.bucket_name, "Key": params["Key"]}
        if call == "put_object":
            request["Body"] = b"x"
        else:
            client.put_object(Body=b"x", **request)  # (as the test: no role)
    with acting_as(role):
        if refused:
            with pytest.raises(ClientError) as error:
                getattr(client, call)(**request)
            assert error.value.response["Error"]["Code"] in {
                "AccessDenied",
                "AccessDeniedException",
            }
        else:
            getattr(client, call)(**request)
    assert len(iam_enforcement.refusals) == int(refused)
    iam_enforcement.refusals.clear()  # (expected here)
