"""The service's own pipeline options, as DescribePipelineOptions describes them, and how the
options a client submits are read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from beamjobs.errors import InvalidArgument

if TYPE_CHECKING:
    from beamjobs.blobs import BlobStore
    from beamjobs.model import Job


@dataclass(frozen=True)
class OptionDescriptor:
    name: str
    type: str  # Beam's PipelineOptionType.Enum name
    description: str
    default_value: str
    group: str = "Beamjobs"


JOB_TIMEOUT_SECONDS = OptionDescriptor(
    name="job_timeout_seconds",
    type="INTEGER",
    description="Fail the job (cause: timed out) when it runs longer than this many seconds.",
    default_value="86400",
)
WORKER_VCPU = OptionDescriptor(
    name="worker_vcpu",
    type="NUMBER",
    description="vCPUs of the worker's Fargate task (AWS executor): 0.25, 0.5, 1, 2, 4, 8 or 16.",
    default_value="1",
)
WORKER_MEMORY_MB = OptionDescriptor(
    name="worker_memory_mb",
    type="INTEGER",
    description="Memory of the worker's Fargate task in MiB (AWS executor).",
    default_value="4096",
)

SERVICE_OPTIONS = (JOB_TIMEOUT_SECONDS, WORKER_VCPU, WORKER_MEMORY_MB)


def option_key(name: str) -> str:
    """The key under which Beam SDKs send an option in the options Struct."""
    return f"beam:option:{name}:v1"


def read_option(options: dict[str, Any], descriptor: OptionDescriptor) -> float:
    """A numeric service option from submitted options (SDKs send numbers as strings)."""
    raw = options.get(option_key(descriptor.name))
    if raw is None:
        raw = descriptor.default_value
    try:
        value = float(raw)
    except (TypeError, ValueError) as error:
        raise InvalidArgument(f"--{descriptor.name} must be a number, not {raw!r}") from error
    if value <= 0:
        raise InvalidArgument(f"--{descriptor.name} must be positive, not {raw!r}")
    return value


def job_options(job: Job, blobs: BlobStore) -> dict[str, Any]:
    """A job's pipeline options (Beam's Struct in JSON form): inline on its record when small
    enough, else from S3."""
    return dict(json.loads(job.options_json or blobs.get(job.options_ref)))
