"""The AWS executor: each job is one Step Functions execution of the run-job state machine
(statemachine/run_job.asl.json), which runs the job's worker as a Fargate task.

The execution is named by the job id, so a retried Run starts nothing new; Cancel and Drain
stop the execution, which stops the task. How a job ends when its worker could not record it is
settled by the reconcile function (beamjobs.reconcile), from the state machine's Catch and from
the execution's status change.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from beamjobs.aws import error_code
from beamjobs.blobs import BlobStore
from beamjobs.errors import InvalidArgument
from beamjobs.executor import ExecutorError
from beamjobs.fargate import worker_task_overrides
from beamjobs.options import JOB_TIMEOUT_SECONDS, read_option
from beamjobs.store import Job


def execution_arn(state_machine_arn: str, job_id: str) -> str:
    """arn:…:stateMachine:<name> → arn:…:execution:<name>:<job id>."""
    prefix, name = state_machine_arn.rsplit(":stateMachine:", 1)
    return f"{prefix}:execution:{name}:{job_id}"


class StepFunctionsExecutor:
    def __init__(
        self, sfn: Any, state_machine_arn: str, blobs: BlobStore, *, max_job_seconds: int
    ) -> None:
        self._sfn = sfn
        self._state_machine_arn = state_machine_arn
        self._blobs = blobs
        self._max_job_seconds = max_job_seconds

    def execution_input(self, job: Job) -> dict[str, Any]:
        """What the state machine needs: the job, its task's overrides, its time limit (the
        job's --job_timeout_seconds, at most the deployment's maximum)."""
        options = json.loads(job.options_json or self._blobs.get(job.options_ref))
        try:
            return {
                "job_id": job.job_id,
                "overrides": _step_functions_casing(
                    worker_task_overrides(job.job_id, options, with_sdk_sidecar=False)
                ),
                "timeout_seconds": min(
                    int(read_option(options, JOB_TIMEOUT_SECONDS)), self._max_job_seconds
                ),
            }
        except InvalidArgument as invalid:
            raise ExecutorError(invalid.message) from invalid

    def start(self, job: Job) -> None:
        try:
            self._sfn.start_execution(
                stateMachineArn=self._state_machine_arn,
                name=job.job_id,
                input=json.dumps(self.execution_input(job)),
            )
        except ClientError as error:
            if error_code(error) == "ExecutionAlreadyExists":
                return  # a retry of this Run: the execution is under way
            raise ExecutorError(f"StartExecution failed: {error_code(error)}") from error
        except BotoCoreError as error:
            raise ExecutorError(f"StartExecution failed: {error}") from error

    def stop(self, job_id: str) -> None:
        try:
            self._sfn.stop_execution(
                executionArn=execution_arn(self._state_machine_arn, job_id),
                error="Beamjobs.Stopped",
                cause=f"job {job_id} was cancelled or drained",
            )
        except ClientError as error:
            raise ExecutorError(f"StopExecution failed: {error_code(error)}") from error
        except BotoCoreError as error:
            raise ExecutorError(f"StopExecution failed: {error}") from error


def _step_functions_casing(overrides: dict[str, Any]) -> dict[str, Any]:
    """RunTask's overrides as Step Functions passes them: PascalCase keys (the ECS API's
    JSON uses camelCase), values unchanged."""

    def convert(value: Any, *, keys: bool) -> Any:
        if isinstance(value, dict):
            return {
                (key[:1].upper() + key[1:] if keys else key): convert(item, keys=keys)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [convert(item, keys=keys) for item in value]
        return value

    return dict(convert(overrides, keys=True))
