import pytest

from beamjobs.aws.fargate import (
    SDK_CONTAINER,
    WORKER_POOL_ENV,
    task_definition_with_sdk,
    worker_task_overrides,
)
from beamjobs.domain.errors import InvalidArgument

BASE = {
    "family": "beamjobs-worker",
    "requiresCompatibilities": ["FARGATE"],
    "networkMode": "awsvpc",
    "cpu": "1024",
    "memory": "4096",
    "containerDefinitions": [
        {
            "name": "worker",
            "image": "123.dkr.ecr.us-east-1.amazonaws.com/beamjobs-worker:1",
            "essential": True,
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}},
        }
    ],
}


def test_a_job_overrides_the_workers_command_and_the_task_size():
    overrides = worker_task_overrides(
        "job-1",
        "arn:aws:s3:::bucket/secrets/job-1.env",
        {"beam:option:worker_vcpu:v1": "2", "beam:option:worker_memory_mb:v1": "8192"},
        with_sdk_sidecar=False,
    )
    assert (overrides["cpu"], overrides["memory"]) == ("2048", "8192")
    [worker] = overrides["containerOverrides"]
    assert worker["name"] == "worker"
    assert worker["command"] == ["python", "-m", "beamjobs.worker", "job-1"]
    # The worker's one credential, its job's secret, is read by ECS from the job's file: the
    # overrides name the file, not the secret.
    assert worker["environment"] == []
    assert worker["environmentFiles"] == [
        {"type": "s3", "value": "arn:aws:s3:::bucket/secrets/job-1.env"}
    ]


def test_with_a_sidecar_the_worker_is_told_where_its_pool_listens():
    overrides = worker_task_overrides("job-1", "s", {}, with_sdk_sidecar=True)
    [worker] = overrides["containerOverrides"]
    assert {"name": WORKER_POOL_ENV, "value": "localhost:50000"} in worker["environment"]
    assert (overrides["cpu"], overrides["memory"]) == ("1024", "4096")  # the defaults


@pytest.mark.parametrize(
    ("vcpu", "memory"), [("3", "4096"), ("1", "1024"), ("1", "8500"), ("0.25", "4096")]
)
def test_sizes_fargate_refuses_are_invalid_arguments(vcpu, memory):
    options = {"beam:option:worker_vcpu:v1": vcpu, "beam:option:worker_memory_mb:v1": memory}
    with pytest.raises(InvalidArgument):
        worker_task_overrides("job-1", "s", options, with_sdk_sidecar=False)


def test_the_sdk_image_joins_the_task_as_a_worker_pool_sidecar():
    definition = task_definition_with_sdk(BASE, "apache/beam_python3.11_sdk:2.77.0")
    worker, sdk = definition["containerDefinitions"]
    assert sdk["name"] == SDK_CONTAINER and sdk["image"] == "apache/beam_python3.11_sdk:2.77.0"
    assert sdk["command"] == ["--worker_pool"] and not sdk["essential"]
    assert sdk["memoryReservation"] == 128  # a reservation, never a limit
    assert sdk["portMappings"] == [{"containerPort": 50000, "protocol": "tcp"}]
    assert sdk["logConfiguration"] == worker["logConfiguration"]
    assert worker["dependsOn"] == [{"containerName": "sdk", "condition": "START"}]
    assert len(BASE["containerDefinitions"]) == 1  # the base is not modified
    again = task_definition_with_sdk(definition, "apache/beam_python3.11_sdk:2.78.0")
    assert [c["image"] for c in again["containerDefinitions"]][-1].endswith("2.78.0")
    assert len(again["containerDefinitions"]) == 2
