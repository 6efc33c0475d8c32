"""The AWS executor: each job is one Step Functions execution of the run-job state machine
(statemachine/run_job.asl.json), which runs the job's worker as a Fargate task. A job on an
upstream engine runs its mirror (beamjobs.upstream.mirror) instead, as a small task of the same
state machine, started again if it dies; on the built-in Prism, the mirror runs in the worker's
task, whose image has Prism. The execution is named by the job id, so a retried Run starts nothing
new; Cancel and Drain stop the execution, which stops the task. A pipeline whose environment is
DOCKER runs in the worker's own process when its image is the worker's own SDK image, and else
with its SDK image as a worker-pool sidecar (a Docker Hub image pulled through the deployment's
pull-through cache, or not at all): a revision of the worker's task definition is registered
per image (beamjobs.aws.fargate), in a family of the image's own, once per image and worker
task definition revision (a cold start finds it by its tag). How a job ends when its
worker could not record it is settled by the reconcile function (beamjobs.app.reconcile), from the
state machine's Catch and from the execution's status change.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from beamjobs.aws.errors import error_code
from beamjobs.aws.fargate import (
    mirror_task_overrides,
    prism_task_overrides,
    task_definition_with_sdk,
    worker_task_overrides,
)
from beamjobs.domain.blobs import BlobStore
from beamjobs.domain.engines import OWN_PRISM
from beamjobs.domain.executor import ExecutorError, UnrunnableJob
from beamjobs.domain.model import Job
from beamjobs.domain.options import JOB_TIMEOUT_SECONDS, job_options, read_option
from beamjobs.domain.worker_secrets import worker_secret_key
from beamjobs.pipeline.sdk_images import docker_hub_path, same_python_sdk
from beamjobs.pipeline.summary import docker_images
from beamjobs.pipeline.validation import parse_pipeline

logger = logging.getLogger(__name__)

# The tag of a worker task definition revision with an SDK sidecar that names the worker task
# definition (its ARN, so its revision) it was made from.
_MADE_FROM = "beamjobs:made-from"
# How long a job offered to the warm pool waits for a pooled worker to take it before the state
# machine starts the job's own task: a taker answers in well under a second (its long poll
# returns at once, then one call of the worker channel), and a cold start costs a minute or more.
WARM_OFFER_SECONDS = 5
# How often the state machine looks at a pooled worker's task (which it cannot wait on, as
# runTask.sync waits on a task of the job's own), at least: each look is 11 events of the
# execution's history, which holds 25,000, so a long job's looks are spaced further apart.
WATCH_SECONDS = 60
_EVENTS_PER_WATCH = 11
_MOST_WATCH_EVENTS = 20_000
# A mirror ends its job itself at the job's time limit (cancelling it upstream); its task's own
# limit comes this much later.
MIRROR_GRACE_SECONDS = 300


def execution_arn(state_machine_arn: str, job_id: str) -> str:
    """arn:…:stateMachine:<name> → arn:…:execution:<name>:<job id>."""
    prefix, name = state_machine_arn.rsplit(":stateMachine:", 1)
    return f"{prefix}:execution:{name}:{job_id}"


class Executions:
    """Jobs' executions of the run-job state machine: whether one still runs (its worker's
    task: the state machine waits on it, runTask.sync, so the execution runs while the task is
    starting or running, and ends when it stops), and stopping one (which stops the task)."""

    def __init__(self, sfn: Any, state_machine_arn: str) -> None:
        self._sfn = sfn
        self._state_machine_arn = state_machine_arn

    def running(self, job_id: str) -> bool | None:
        arn = execution_arn(self._state_machine_arn, job_id)
        try:
            status = self._sfn.describe_execution(executionArn=arn)["status"]
        except ClientError as error:
            if error_code(error) == "ExecutionDoesNotExist":  # never started, or long gone
                return False
            logger.warning("could not describe execution %s: %s", arn, error_code(error))
            return None
        except BotoCoreError:
            logger.warning("could not describe execution %s", arn, exc_info=True)
            return None
        # PENDING_REDRIVE: a failed execution being redriven runs again.
        return status in ("RUNNING", "PENDING_REDRIVE")

    def stop(self, job_id: str) -> None:
        """Stop the job's execution. One not started yet (a Cancel racing the Run that starts
        it) has nothing to stop: the Run's execution then runs a worker that finds the job
        being cancelled, and ends without running it."""
        try:
            self._sfn.stop_execution(
                executionArn=execution_arn(self._state_machine_arn, job_id),
                error="Beamjobs.Stopped",
                cause=f"job {job_id} was cancelled, drained or lost",
            )
        except ClientError as error:
            if error_code(error) == "ExecutionDoesNotExist":
                return
            raise ExecutorError(f"StopExecution failed: {error_code(error)}") from error
        except BotoCoreError as error:
            raise ExecutorError(f"StopExecution failed: {error}") from error


class StepFunctionsExecutor:
    name = "fargate"

    def __init__(
        self,
        sfn: Any,
        ecs: Any,
        state_machine_arn: str,
        blobs: BlobStore,
        *,
        bucket: str,
        worker_task_definition: str,
        mirror_task_definition: str | None = None,
        max_job_seconds: int,
        worker_sdk_image: str | None = None,
        docker_hub_cache: str | None = None,
        warm_pool_size: str | None = None,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        """`warm_pool_size`: the warm pool's task size ("<cpu units>/<memory MiB>"), when the
        deployment has a pool: jobs of that size are offered to it first, and the state
        machine looks at a pooled worker's task every `watch_seconds` at least."""
        self._sfn = sfn
        self._ecs = ecs
        self._state_machine_arn = state_machine_arn
        self._executions = Executions(sfn, state_machine_arn)
        self._blobs = blobs
        self._bucket = bucket
        self._worker_task_definition = worker_task_definition
        self._mirror_task_definition = mirror_task_definition
        self._max_job_seconds = max_job_seconds
        self._worker_sdk_image = worker_sdk_image
        self._docker_hub_cache = docker_hub_cache
        self._warm_pool_size = warm_pool_size
        self._watch_seconds = watch_seconds
        # SDK image → the worker task definition revision with that image as its sidecar.
        self._with_sdk: dict[str, str] = {}

    def _secret_file(self, job: Job) -> str:
        """The ARN of the object holding the job's worker secret (in the state machine's
        partition)."""
        partition = self._state_machine_arn.split(":")[1]
        return f"arn:{partition}:s3:::{self._bucket}/{worker_secret_key(job.job_id)}"

    def execution_input(self, job: Job) -> dict[str, Any]:
        """What the state machine needs: the job, its task definition and overrides, its time
        limit (the job's --job_timeout_seconds, at most the deployment's maximum)."""
        options = job_options(job, self._blobs)
        sidecar = self._sidecar_image(parse_pipeline(self._blobs.get(job.pipeline_ref)))
        timeout = self._timeout(options)
        # The options were validated at Prepare (JobControl.prepare).
        overrides = worker_task_overrides(
            job.job_id, self._secret_file(job), options, with_sdk_sidecar=bool(sidecar)
        )
        pooled = f"{overrides['cpu']}/{overrides['memory']}" == self._warm_pool_size
        return {
            "job_id": job.job_id,
            "task_definition": (
                self._task_definition_with_sdk(sidecar) if sidecar else self._worker_task_definition
            ),
            "overrides": _step_functions_casing(overrides),
            "timeout_seconds": timeout,
            "mirror": False,
            # A pooled worker runs the worker's own image at the pool's size, with no sidecar.
            "warm": pooled and not sidecar,
            "offer_seconds": WARM_OFFER_SECONDS,
            # When a pooled worker's job has had its time (its task is then stopped).
            "deadline": _timestamp(time.time() + timeout),
            "watch_seconds": max(
                self._watch_seconds, math.ceil(timeout * _EVENTS_PER_WATCH / _MOST_WATCH_EVENTS)
            ),
        }

    def _sidecar_image(self, pipeline: Any) -> str | None:
        """The image to pull for the SDK sidecar of the pipeline's DOCKER environments, if any:
        none for the worker's own SDK image (which runs in the worker's process), and a Docker
        Hub image only through the deployment's pull-through cache. UnrunnableJob when the
        pipeline needs more than one sidecar, or one this deployment does not pull."""
        images = [
            image
            for image in docker_images(pipeline)
            if not (self._worker_sdk_image and same_python_sdk(image, self._worker_sdk_image))
        ]
        if len(images) > 1:
            raise UnrunnableJob(
                f"the pipeline's DOCKER environments use {len(images)} SDK images "
                f"({', '.join(images)}); a job's worker runs one SDK image beside it"
            )
        if not images:
            return None
        path = docker_hub_path(images[0])
        if path is None:
            return images[0]
        if not self._docker_hub_cache:
            raise UnrunnableJob(
                f"the pipeline's SDK image {images[0]} is on Docker Hub, and this deployment "
                "pulls nothing from Docker Hub (its pull limits fail task starts): deploy with "
                "DockerHubCredentialArn for a pull-through cache, push the image to one of "
                "the deployment's ECR repositories, or use the worker's own SDK image "
                f"{self._worker_sdk_image} (which needs no pull)"
            )
        return f"{self._docker_hub_cache}/{path}"

    def mirror_input(self, job: Job, endpoint: str) -> dict[str, Any]:
        """What the state machine needs to run a job's mirror: the mirror's task definition
        and overrides; its time limit leaves the mirror time to end the job itself first."""
        options = job_options(job, self._blobs)
        if endpoint == OWN_PRISM:  # in the worker's task, whose image has Prism
            task_definition = self._worker_task_definition
            overrides = prism_task_overrides(job.job_id, self._secret_file(job), options)
        elif self._mirror_task_definition:
            task_definition = self._mirror_task_definition
            overrides = mirror_task_overrides(
                job.job_id, self._secret_file(job), job.engine, endpoint
            )
        else:
            raise ExecutorError("this deployment has no mirror task (MirrorTaskDefinition)")
        return {
            "job_id": job.job_id,
            "task_definition": task_definition,
            "overrides": _step_functions_casing(overrides),
            "timeout_seconds": self._timeout(options) + MIRROR_GRACE_SECONDS,
            "mirror": True,
        }

    def _timeout(self, options: dict[str, Any]) -> int:
        """The job's --job_timeout_seconds, at most the deployment's maximum."""
        return min(int(read_option(options, JOB_TIMEOUT_SECONDS)), self._max_job_seconds)

    def _task_definition_with_sdk(self, image: str) -> str:
        """The worker task definition with `image` as its sidecar: the latest revision of the
        image's family when it was made from the worker's task definition as it is now (so a
        cold start, or another function, registers nothing), else a new revision."""
        if image not in self._with_sdk:
            try:
                base = self._ecs.describe_task_definition(
                    taskDefinition=self._worker_task_definition
                )["taskDefinition"]
                # What DescribeTaskDefinition adds (ARN, revision, status…) is not registrable.
                accepted = self._ecs.meta.service_model.operation_model(
                    "RegisterTaskDefinition"
                ).input_shape.members
                request = task_definition_with_sdk(
                    {key: value for key, value in base.items() if key in accepted}, image
                )
                made_from = {"key": _MADE_FROM, "value": base["taskDefinitionArn"]}
                latest = self._latest(request["family"])
                if latest is not None and made_from in latest["tags"]:
                    arn = latest["taskDefinition"]["taskDefinitionArn"]
                else:
                    registered = self._ecs.register_task_definition(**request, tags=[made_from])
                    arn = registered["taskDefinition"]["taskDefinitionArn"]
            except ClientError as error:
                raise ExecutorError(
                    f"could not register the worker task with SDK image {image}: "
                    f"{error_code(error)}"
                ) from error
            self._with_sdk[image] = str(arn)
        return self._with_sdk[image]

    def _latest(self, family: str) -> dict[str, Any] | None:
        """The family's latest active revision, with its tags; None when it has none."""
        try:
            return dict(self._ecs.describe_task_definition(taskDefinition=family, include=["TAGS"]))
        except ClientError as error:
            if error_code(error) == "ClientException":  # "Unable to describe task definition"
                return None
            raise

    def start(self, job: Job) -> None:
        self._start_execution(job.job_id, self.execution_input(job))

    def start_mirror(self, job: Job, endpoint: str) -> None:
        self._start_execution(job.job_id, self.mirror_input(job, endpoint))

    def _start_execution(self, job_id: str, execution_input: dict[str, Any]) -> None:
        try:
            self._sfn.start_execution(
                stateMachineArn=self._state_machine_arn,
                name=job_id,
                input=json.dumps(execution_input),
            )
        except ClientError as error:
            if error_code(error) == "ExecutionAlreadyExists":
                return  # a retry of this Run: the execution is under way
            raise ExecutorError(f"StartExecution failed: {error_code(error)}") from error
        except BotoCoreError as error:
            raise ExecutorError(f"StartExecution failed: {error}") from error

    def running(self, job_id: str) -> bool | None:
        return self._executions.running(job_id)

    def stop(self, job_id: str) -> None:
        self._executions.stop(job_id)


def _timestamp(seconds: float) -> str:
    """An instant as Step Functions' timestamps are written (RFC 3339, UTC)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _step_functions_casing(overrides: dict[str, Any]) -> dict[str, Any]:
    """RunTask's overrides as Step Functions passes them: PascalCase keys (the ECS API's
    JSON uses camelCase), values unchanged."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {key[:1].upper() + key[1:]: convert(item) for key, item in value.items()}
        if isinstance(value, list):
            return [convert(item) for item in value]
        return value

    return dict(convert(overrides))
