"""The warm pool on the AWS path, simulated offline (tests.simulated_aws): the run-job state
machine executing in moto's Step Functions offers each job to the pool, a pooled worker (a local
process standing for the pool's ECS task) takes it through the worker channel and runs it; a job
that no pooled worker takes in time starts its own task. Taking is for the pool's own task
sessions, once each."""

from __future__ import annotations

import time

import boto3
import pytest
from botocore.credentials import ReadOnlyCredentials

from beamjobs.aws.signed_identity import WORKER_CHANNEL, sign, sts_url
from beamjobs.domain.errors import FailedPrecondition, PermissionDenied
from beamjobs.domain.identity import LOCAL_CALLER
from beamjobs.domain.states import JobState
from beamjobs.local.embedded import LOCAL_REGION
from beamjobs.local.invoker import LocalContext
from beamjobs.worker.channel import WORKER_FUNCTION, take_offer
from beamjobs_functions.worker.app import handler_for
from tests.iam_policies import Deployment
from tests.integration.conftest import pipeline_bytes
from tests.simulated_aws import simulated_aws

ENDED = {JobState.DONE, JobState.FAILED, JobState.CANCELLED}


def _until(condition, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def _history(sim, job_id):
    sfn = boto3.client("stepfunctions", region_name=LOCAL_REGION, endpoint_url=sim.aws.endpoint_url)
    arn = sim.settings.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{job_id}"
    return sfn, arn


def _entered(sim, job_id):
    sfn, arn = _history(sim, job_id)
    return [
        event["stateEnteredEventDetails"]["name"]
        for event in sfn.get_execution_history(executionArn=arn)["events"]
        if "stateEnteredEventDetails" in event
    ]


@pytest.fixture(scope="module")
def pool_of_two(tmp_path_factory):
    with simulated_aws(tmp_path_factory.mktemp("tasks"), pool=2) as sim:
        _until(lambda: sim.fargate.ready() == 2)
        yield sim


@pytest.fixture(autouse=True)
def pool_deployed(iam_enforcement, transformed_template, pool_of_two):
    """The template's roles, as a stack with a pool deploys them, enforced on the simulation's
    resources: the worker function's hand-over of offered jobs (its WarmPoolHandOverPolicy)
    above all."""
    sim = pool_of_two
    dynamodb = boto3.client("dynamodb", region_name=LOCAL_REGION, endpoint_url=sim.aws.endpoint_url)
    table = dynamodb.describe_table(TableName=sim.settings.table_name)["Table"]
    iam_enforcement.deploy(
        Deployment(
            transformed_template,
            {
                "JobsTable": sim.settings.table_name,
                "IdempotencyTable": sim.settings.idempotency_table_name,
                "ArtifactsBucket": sim.settings.bucket_name,
                "Cluster": sim.cluster,
            },
            table["LatestStreamArn"],
            parameters={"WarmWorkers": 2},
        )
    )


def test_a_job_is_taken_by_a_waiting_pooled_worker_runs_and_the_pool_refills(pool_of_two):
    sim = pool_of_two
    # (A time limit of 10 minutes: the state machine looks at its task every second here.)
    job_id = sim.prepare(pipeline_bytes(), {"beam:option:job_timeout_seconds:v1": "600"})
    sim.run_to_running(job_id)
    assert sim.wait_for(job_id, ENDED) is JobState.DONE
    entered = _entered(sim, job_id)
    assert "OfferToWarmPool" in entered and "WatchPooledWorker" in entered
    assert "RunWorker" not in entered  # no task of its own
    # The pooled task exits with its job, and the pool is two waiting workers again.
    _until(lambda: sim.fargate.waiting() == 2)
    # The execution ran while the task did, and ends once it has stopped.
    sfn, arn = _history(sim, job_id)
    _until(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING", 40)
    assert sfn.describe_execution(executionArn=arn)["status"] == "SUCCEEDED"


def test_a_job_of_another_size_than_the_pools_starts_its_own_task_at_once(pool_of_two):
    sim = pool_of_two
    job_id = sim.prepare(pipeline_bytes(), {"beam:option:worker_vcpu:v1": "2"})
    took = sim.run_to_running(job_id)
    assert sim.wait_for(job_id, ENDED) is JobState.DONE
    entered = _entered(sim, job_id)
    assert "RunWorker" in entered and "OfferToWarmPool" not in entered
    assert took < 5  # no offer waited for
    assert sim.fargate.waiting() == 2  # the pool untouched


def _proof(credentials, endpoint):
    return sign(
        ReadOnlyCredentials(
            credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"]
        ),
        region=LOCAL_REGION,
        url=sts_url(LOCAL_REGION, endpoint),
        deployment=WORKER_CHANNEL,
    )


class _Channel:
    """The worker function's handler, called as Lambda would."""

    def __init__(self, settings):
        self._handler = handler_for(settings)

    def invoke(self, function, event):
        assert function == WORKER_FUNCTION
        return self._handler(event, LocalContext(function))


def test_only_a_pooled_task_takes_an_offer_and_only_once(pool_of_two):
    sim = pool_of_two
    endpoint = sim.aws.endpoint_url
    sts = boto3.client("sts", region_name=LOCAL_REGION, endpoint_url=endpoint)
    channel = _Channel(sim.settings)
    pool_role = sim.settings.warm_pool_role
    worker_role = sim.roles["worker"]
    # A job's own worker (the workers' role) takes nothing, nor a forged proof.
    worker = sts.assume_role(RoleArn=worker_role, RoleSessionName="job-task")["Credentials"]
    with pytest.raises(PermissionDenied):
        take_offer(channel, "some-job", "token", _proof(worker, endpoint))
    # A pooled task takes one offer in its life: here one that is gone (its token is no
    # execution's), which spends the task all the same.
    pooled = sts.assume_role(RoleArn=pool_role, RoleSessionName="used-task")["Credentials"]
    with pytest.raises(FailedPrecondition):
        take_offer(channel, "some-job", "not-a-token", _proof(pooled, endpoint))
    # And then, with a real offer (a job waiting for a taker), it is refused: the offer stays
    # for the pool's waiting workers, which take it.
    job_id = sim.prepare(pipeline_bytes())
    sim.control.run(LOCAL_CALLER, job_id)
    with pytest.raises(PermissionDenied):
        take_offer(channel, job_id, "any-token", _proof(pooled, endpoint))
    assert sim.wait_for(job_id, ENDED) is JobState.DONE
    assert "RunWorker" not in _entered(sim, job_id)


def test_a_job_no_pooled_worker_takes_in_time_starts_its_own_task(pool_of_two):
    sim = pool_of_two
    sim.fargate.resize(0)  # a pool all of whose workers are busy: nobody waits on the queue
    _until(lambda: sim.fargate.waiting() == 0)
    try:
        job_id = sim.prepare(pipeline_bytes())
        took = sim.run_to_running(job_id)
        assert sim.wait_for(job_id, ENDED) is JobState.DONE
        entered = _entered(sim, job_id)
        assert entered.index("OfferToWarmPool") < entered.index("RunWorker")
        assert took >= 5  # the offer's window, then a task of its own
    finally:
        sim.fargate.resize(2)
