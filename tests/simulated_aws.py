"""The AWS path with its warm pool, simulated offline, for the tests and `make bench`.

- The embedded AWS (moto's server) in this process, executing the run-job state machine
  (statemachine/run_job.asl.json, substituted as the template does) with moto's Step Functions,
  whose calls reach the same embedded AWS: the offers queue (SQS), ECS, DynamoDB.
- The control plane (Prepare and Run, with the AWS executor) and the worker channel (the worker
  function's handler, served as the local executor serves it) in this process, as the handlers
  run on AWS.
- ECS's tasks as local worker processes ("local Fargate"). A task the state machine starts
  (RunTask) runs its container's command, `python -m beamjobs.worker JOB_ID`, with its job's
  secret read from the environment file the overrides name, as ECS does. A pooled task (the
  pool's service, kept at its size) runs `python -m beamjobs.worker --warm` with credentials of
  a session of the pool's role named after its task, as ECS names a task role's sessions. When
  a process exits, its task is stopped.

What it does not simulate: Fargate's own start (a minute or more for a cold task, pulling its
image, against a process start here), Lambda's, and ECS's task scale-in protection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from moto.core.config import default_user_config
from moto.moto_api import state_manager

from beamjobs import runtime
from beamjobs.app.service import JobControl
from beamjobs.aws import clients
from beamjobs.aws.stepfunctions import StepFunctionsExecutor
from beamjobs.domain.engines import Engines
from beamjobs.domain.identity import LOCAL_CALLER
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.limits import Quotas
from beamjobs.domain.staging_tokens import digest, mint
from beamjobs.domain.states import JobState
from beamjobs.domain.worker_secrets import WORKER_SECRET_ENV
from beamjobs.local.embedded import (
    LOCAL_ACCOUNT,
    LOCAL_REGION,
    LOCAL_TABLE,
    EmbeddedAws,
    local_settings,
)
from beamjobs.local.executor import worker_environment
from beamjobs.local.provision import provision
from beamjobs.local.worker_channel import LocalWorkerChannel
from beamjobs.settings import Settings
from beamjobs.worker.warm_pool import READY
from beamjobs_functions.worker.app import handler_for
from tests.moto_gaps import bridge_ecs_casing
from tests.processes import ROOT, WORKER_PYTHON

TEMPLATE = ROOT / "template.yaml"
STATE_MACHINE = ROOT / "statemachine" / "run_job.asl.json"
# The task size of a job with default options, and so of the pool (the template's defaults).
POOL_SIZE = "1024/4096"
_POOL_STARTED_BY = "warm-pool"
_TRUST_ECS_TASKS = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


@dataclass
class _Task:
    arn: str
    process: subprocess.Popen[bytes]
    pooled: bool
    log: Path


class LocalFargate:
    """ECS's tasks of one cluster as local processes; the pool's service kept at `pool` tasks
    that have taken no job."""

    def __init__(
        self,
        settings: Settings,
        channel_url: str,
        cluster: str,
        pool_task_definition: str,
        pool_role: str,
        offers_queue: str,
        network: dict[str, list[str]],
        logs: Path,
    ) -> None:
        self._ecs = boto3.client(
            "ecs", region_name=LOCAL_REGION, endpoint_url=settings.endpoint_url
        )
        self._sts = boto3.client(
            "sts", region_name=LOCAL_REGION, endpoint_url=settings.endpoint_url
        )
        self._s3 = boto3.client("s3", region_name=LOCAL_REGION, endpoint_url=settings.endpoint_url)
        self._settings = settings
        self._channel_url = channel_url
        self._cluster = cluster
        self._pool_task_definition = pool_task_definition
        self._pool_role = pool_role
        self._offers_queue = offers_queue
        self._network = network
        self._logs = logs
        self.pool = 0
        self._tasks: dict[str, _Task] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-fargate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        for task in self._tasks.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(task.process.pid, 9)
            task.process.wait()

    def resize(self, pool: int) -> None:
        """The pool's service at `pool` tasks: waiting workers beyond it are stopped (as ECS
        stops tasks of a service scaled in)."""
        self.pool = pool
        waiting = [t for t in list(self._tasks.values()) if t.pooled and t.process.poll() is None]
        for task in waiting[pool:]:
            task.process.terminate()

    def ready(self) -> int:
        """Pooled workers waiting that have made their set-up (they said so in their log)."""
        return sum(
            1
            for task in list(self._tasks.values())
            if task.pooled
            and task.process.poll() is None
            and READY in task.log.read_text(errors="replace")
        )

    def waiting(self) -> int:
        """Pooled workers started and not yet holding a job (their process runs)."""
        return sum(
            1 for task in list(self._tasks.values()) if task.pooled and task.process.poll() is None
        )

    def _run(self) -> None:
        while not self._stopping.wait(0.05):
            self._start_new_tasks()
            self._stop_exited_tasks()
            self._keep_pool()

    def _start_new_tasks(self) -> None:
        running = self._ecs.list_tasks(cluster=self._cluster, desiredStatus="RUNNING")["taskArns"]
        new = [arn for arn in running if arn not in self._tasks]
        if not new:
            return
        for task in self._ecs.describe_tasks(cluster=self._cluster, tasks=new)["tasks"]:
            if task.get("startedBy") == _POOL_STARTED_BY:
                continue  # started by _keep_pool, with its process
            [container] = task["overrides"]["containerOverrides"]
            env = worker_environment(self._settings, self._channel_url)
            for file in container.get("environmentFiles", []):
                env.update(self._environment_file(file["value"]))
            env.update({e["name"]: e["value"] for e in container.get("environment", [])})
            command = [WORKER_PYTHON, *container["command"][1:]]  # `python` is the worker's
            self._spawn(task["taskArn"], command, env, pooled=False)

    def _environment_file(self, arn: str) -> dict[str, str]:
        bucket, _, key = arn.removeprefix("arn:aws:s3:::").partition("/")
        text = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def _stop_exited_tasks(self) -> None:
        for arn, task in list(self._tasks.items()):
            code = task.process.poll()
            if code is not None and arn in self._tasks:
                del self._tasks[arn]
                self._ecs.stop_task(cluster=self._cluster, task=arn, reason=f"exit code {code}")

    def _keep_pool(self) -> None:
        while self.waiting() < self.pool and not self._stopping.is_set():
            [task] = self._ecs.run_task(
                cluster=self._cluster,
                taskDefinition=self._pool_task_definition,
                launchType="FARGATE",
                startedBy=_POOL_STARTED_BY,
                networkConfiguration={"awsvpcConfiguration": self._network},
            )["tasks"]
            task_id = task["taskArn"].rsplit("/", 1)[1]
            session = self._sts.assume_role(RoleArn=self._pool_role, RoleSessionName=task_id)
            credentials = session["Credentials"]
            env = worker_environment(self._settings, self._channel_url)
            env.update(
                {
                    "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
                    "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
                    "AWS_SESSION_TOKEN": credentials["SessionToken"],
                    # Its channel is the worker function's; its queue and STS are AWS's.
                    "AWS_ENDPOINT_URL_SQS": str(self._settings.endpoint_url),
                    "AWS_ENDPOINT_URL_STS": str(self._settings.endpoint_url),
                    "BEAMJOBS_OFFERS_QUEUE": self._offers_queue,
                }
            )
            env.pop(WORKER_SECRET_ENV, None)
            command = [WORKER_PYTHON, "-m", "beamjobs.worker", "--warm"]
            self._spawn(task["taskArn"], command, env, pooled=True)

    def _spawn(self, arn: str, command: list[str], env: dict[str, str], *, pooled: bool) -> None:
        log = self._logs / f"{arn.rsplit('/', 1)[1]}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._tasks[arn] = _Task(arn, process, pooled, log)


@dataclass
class SimulatedAws:
    """The whole path, started: `run_job` prepares and runs a trivial job as the handlers
    would, and answers how long it took from Run to RUNNING."""

    aws: EmbeddedAws
    settings: Settings
    control: JobControl
    jobs: Jobs
    fargate: LocalFargate
    channel: LocalWorkerChannel
    # The deployment's roles by what they are for: "worker", "warm-pool", "states".
    roles: dict[str, str]
    # The cluster's name.
    cluster: str

    def prepare(self, pipeline: bytes, options: dict[str, Any] | None = None) -> str:
        blobs = runtime.stores(self.settings).blobs
        return self.control.prepare(
            LOCAL_CALLER,
            pipeline_ref=blobs.put_content("pipelines", pipeline),
            options=options or {},
            job_name="simulated",
            staging_token_sha256=digest(mint()),
        )

    def run_to_running(self, job_id: str, timeout: float = 60) -> float:
        """Run the job; the seconds from Run until it is RUNNING."""
        started = time.monotonic()
        self.control.run(LOCAL_CALLER, job_id)
        self.wait_for(job_id, {JobState.RUNNING, *_ENDED}, timeout)
        return time.monotonic() - started

    def wait_for(self, job_id: str, states: set[JobState], timeout: float = 60) -> JobState:
        deadline = time.monotonic() + timeout
        while (state := self.jobs.get(job_id).state) not in states:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is {state.value}, not {states}")
            time.sleep(0.01)
        return state


_ENDED = {JobState.DONE, JobState.FAILED, JobState.CANCELLED}


def _state_machine(
    sfn: Any, name: str, cluster: str, queue_url: str, role: str, network: dict[str, list[str]]
) -> str:
    """The run-job state machine, substituted as template.yaml's DefinitionSubstitutions do."""
    substitutions = {
        "Partition": "aws",
        "JobsTable": LOCAL_TABLE,
        "Cluster": cluster,
        "WorkerSubnets": ",".join(network["subnets"]),
        "WorkerSecurityGroup": network["securityGroups"][0],
        "MirrorSecurityGroup": network["securityGroups"][0],
        "AssignPublicIp": "DISABLED",
        "ReconcileFunction": f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:reconcile",
        "OffersQueue": queue_url,
    }
    definition = STATE_MACHINE.read_text()
    for variable, value in substitutions.items():
        definition = definition.replace("${" + variable + "}", value)
    return str(
        sfn.create_state_machine(name=name, definition=definition, roleArn=role)["stateMachineArn"]
    )


@contextlib.contextmanager
def simulated_aws(logs: Path, *, pool: int) -> Iterator[SimulatedAws]:
    """The simulated path, with `pool` pooled workers kept waiting (0: no pool, every job
    starts cold)."""
    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    # A task runs until it is stopped (moto would otherwise move it on to STOPPED as it is
    # described): its process's exit stops it.
    state_manager.set_transition("ecs::task", {"progression": "manual", "times": sys.maxsize})
    bridge_ecs_casing()
    aws = EmbeddedAws(0)
    endpoint = aws.start()
    # moto's Step Functions makes its calls to the moto server on this port.
    os.environ["MOTO_PORT"] = endpoint.rsplit(":", 1)[1]
    base = local_settings(endpoint)
    provision(base, TEMPLATE)
    # Its own names: another simulation in this process (moto's backends are the process's)
    # shares the table and bucket only.
    name = f"beamjobs-{uuid.uuid4().hex[:8]}"

    def client(service: str) -> Any:
        return boto3.client(service, region_name=LOCAL_REGION, endpoint_url=endpoint)

    iam, ecs, sqs, ec2 = client("iam"), client("ecs"), client("sqs"), client("ec2")
    [vpc] = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
    group = ec2.create_security_group(
        GroupName=f"{name}-workers", Description="workers", VpcId=vpc["VpcId"]
    )
    network = {
        "subnets": [subnet["SubnetId"] for subnet in subnets["Subnets"][:2]],
        "securityGroups": [group["GroupId"]],
    }
    roles = {
        role: iam.create_role(RoleName=f"{name}-{role}", AssumeRolePolicyDocument=_TRUST_ECS_TASKS)[
            "Role"
        ]["Arn"]
        for role in ("worker", "warm-pool", "states")
    }
    cluster = ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"]
    definitions = {
        family: ecs.register_task_definition(
            family=f"{name}-{family}",
            taskRoleArn=roles[role],
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu=POOL_SIZE.split("/")[0],
            memory=POOL_SIZE.split("/")[1],
            containerDefinitions=[{"name": "worker", "image": "beamjobs-worker", "memory": 256}],
        )["taskDefinition"]["taskDefinitionArn"]
        for family, role in (("worker", "worker"), ("warm-worker", "warm-pool"))
    }
    queue = sqs.create_queue(QueueName=f"{name}-offers")["QueueUrl"]
    state_machine = _state_machine(
        client("stepfunctions"), f"{name}-run-job", cluster, queue, roles["states"], network
    )
    settings = dataclasses.replace(
        base,
        executor="stepfunctions",
        state_machine_arn=state_machine,
        worker_task_definition=definitions["worker"],
        warm_pool_size=POOL_SIZE if pool else None,
        warm_pool_role=roles["warm-pool"] if pool else None,
    )
    channel = LocalWorkerChannel(handler_for(settings))
    stores = runtime.stores(settings)
    executor = StepFunctionsExecutor(
        clients.client("stepfunctions", settings),
        clients.client("ecs", settings),
        state_machine,
        stores.blobs,
        bucket=settings.bucket_name,
        worker_task_definition=definitions["worker"],
        max_job_seconds=settings.max_job_seconds,
        warm_pool_size=settings.warm_pool_size,
        # A pooled task's end is seen within a second here (on AWS, within WATCH_SECONDS).
        watch_seconds=1,
    )
    jobs = Jobs(stores.jobs)
    control = JobControl(jobs, stores.blobs, Engines.only(executor), stores.artifacts, Quotas())
    fargate = LocalFargate(
        settings,
        channel.url,
        cluster,
        definitions["warm-worker"],
        roles["warm-pool"],
        queue,
        network,
        logs,
    )
    fargate.pool = pool
    fargate.start()
    try:
        yield SimulatedAws(aws, settings, control, jobs, fargate, channel, roles, name)
    finally:
        fargate.stop()
        channel.stop()
        aws.stop()
