"""How a job runs as a Fargate task on AWS.

The task has two containers: `worker` (Beamjobs' worker image) and, for pipelines whose
environment is DOCKER, `sdk`: the pipeline's own SDK image started as a worker pool
(`--worker_pool`, Beam's boot program serving the BeamFnExternalWorkerPool API). Fargate cannot
run Docker inside a task, so the worker rewrites DOCKER environments to EXTERNAL ones pointing at
the sidecar on localhost (tasks share their network namespace). ECS cannot override a container's
image at RunTask, so the executor registers one task definition revision per SDK image (built by
`task_definition_with_sdk`) and overrides only the command, environment and size per job.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from beamjobs.domain.engines import PRISM
from beamjobs.domain.errors import InvalidArgument
from beamjobs.domain.options import WORKER_MEMORY_MB, WORKER_VCPU, read_option

WORKER_CONTAINER = "worker"
SDK_CONTAINER = "sdk"
SDK_WORKER_POOL_PORT = 50000
# A soft reservation for the sidecar (the worker's is in template.yaml): together they fit the
# smallest Fargate task (512 MiB), and either may use all of the task's memory.
SDK_MEMORY_RESERVATION_MB = 128
# The families of the worker task with an SDK sidecar: the worker's, this, and the image's hash
# (template.yaml lets the state machine run them).
SDK_FAMILY_INFIX = "-sdk-"
# The worker's setting (Settings.worker_pool) that says where the sidecar's pool listens.
WORKER_POOL_ENV = "BEAMJOBS_WORKER_POOL"

# Fargate's valid task sizes: vCPU → (smallest, largest, step) memory in MiB.
_FARGATE_MEMORY = {
    0.25: (512, 2048, 512),
    0.5: (1024, 4096, 1024),
    1: (2048, 8192, 1024),
    2: (4096, 16384, 1024),
    4: (8192, 30720, 1024),
    8: (16384, 61440, 4096),
    16: (32768, 122880, 8192),
}


def task_size(options: dict[str, Any]) -> tuple[str, str]:
    """The task's cpu units and memory (MiB) from --worker_vcpu and --worker_memory_mb, checked
    against the sizes Fargate accepts."""
    vcpu = read_option(options, WORKER_VCPU)
    memory = int(read_option(options, WORKER_MEMORY_MB))
    if vcpu not in _FARGATE_MEMORY:
        raise InvalidArgument(
            f"--worker_vcpu must be one of {', '.join(f'{v:g}' for v in _FARGATE_MEMORY)}"
        )
    low, high, step = _FARGATE_MEMORY[vcpu]
    if not (low <= memory <= high and (memory - low) % step == 0):
        raise InvalidArgument(
            f"--worker_memory_mb for {vcpu:g} vCPU must be {low} to {high} in steps of {step}"
        )
    return str(int(vcpu * 1024)), str(memory)


def worker_task_overrides(
    job_id: str, secret_file: str, options: dict[str, Any], *, with_sdk_sidecar: bool
) -> dict[str, Any]:
    """The `overrides` of RunTask for one job: its worker reports with the job's secret, which
    ECS reads from `secret_file` (an S3 object's ARN) for the container."""
    environment = {}
    if with_sdk_sidecar:
        environment[WORKER_POOL_ENV] = f"localhost:{SDK_WORKER_POOL_PORT}"
    command = ["python", "-m", "beamjobs.worker", job_id]
    return _worker_container(command, environment, secret_file, options)


def prism_task_overrides(job_id: str, secret_file: str, options: dict[str, Any]) -> dict[str, Any]:
    """The `overrides` of RunTask for one job on the built-in Prism: the worker's task, sized as
    the job's worker would be, running the job's mirror (beamjobs.upstream.mirror) instead, which
    starts the Prism and Beam boot of the worker image (template.yaml names them) on loopback."""
    command = ["python", "-m", "beamjobs.upstream.mirror", job_id]
    return _worker_container(command, {"BEAMJOBS_UPSTREAM_ENGINE": PRISM}, secret_file, options)


def _worker_container(
    command: list[str], environment: dict[str, str], secret_file: str, options: dict[str, Any]
) -> dict[str, Any]:
    cpu, memory = task_size(options)
    return {
        "cpu": cpu,
        "memory": memory,
        "containerOverrides": [
            {
                "name": WORKER_CONTAINER,
                "command": command,
                **_environment(environment, secret_file),
            }
        ],
    }


def _environment(environment: dict[str, str], secret_file: str) -> dict[str, Any]:
    """A container override's variables, and the file ECS reads the job's secret from (the
    task execution role reads it: the task's own role cannot)."""
    return {
        "environment": [{"name": k, "value": v} for k, v in environment.items()],
        "environmentFiles": [{"type": "s3", "value": secret_file}],
    }


MIRROR_CONTAINER = "mirror"


def mirror_task_overrides(
    job_id: str, secret_file: str, engine: str, endpoint: str
) -> dict[str, Any]:
    """The `overrides` of RunTask for one job's mirror (beamjobs.upstream.mirror): a small task of
    its task definition's size, reporting with the job's secret, following the job upstream."""
    environment = {
        "BEAMJOBS_UPSTREAM_ENGINE": engine,
        "BEAMJOBS_UPSTREAM_ENDPOINT": endpoint,
    }
    return {
        "containerOverrides": [
            {
                "name": MIRROR_CONTAINER,
                # The shim's image, whose entry point is the `beamjobs` command.
                "command": ["mirror", job_id],
                **_environment(environment, secret_file),
            }
        ],
    }


def task_definition_with_sdk(base: dict[str, Any], sdk_image: str) -> dict[str, Any]:
    """A RegisterTaskDefinition request: the base worker task plus the SDK image as a
    worker-pool sidecar. The worker waits for the sidecar to start; the sidecar is not
    essential, so the task ends when the worker does."""
    definition = copy.deepcopy(base)
    # A family per image: its latest revision is the one to reuse (beamjobs.aws.stepfunctions).
    digest = hashlib.sha256(sdk_image.encode()).hexdigest()[:16]
    definition["family"] = f"{base['family']}{SDK_FAMILY_INFIX}{digest}"
    containers = [c for c in definition["containerDefinitions"] if c["name"] != SDK_CONTAINER]
    for container in containers:
        if container["name"] == WORKER_CONTAINER:
            container["dependsOn"] = [{"containerName": SDK_CONTAINER, "condition": "START"}]
    containers.append(
        {
            "name": SDK_CONTAINER,
            "image": sdk_image,
            "essential": False,
            "memoryReservation": SDK_MEMORY_RESERVATION_MB,
            "command": ["--worker_pool"],
            "portMappings": [{"containerPort": SDK_WORKER_POOL_PORT, "protocol": "tcp"}],
            "logConfiguration": next(
                (c["logConfiguration"] for c in containers if "logConfiguration" in c), None
            ),
        }
    )
    if containers[-1]["logConfiguration"] is None:
        del containers[-1]["logConfiguration"]
    definition["containerDefinitions"] = containers
    return definition
