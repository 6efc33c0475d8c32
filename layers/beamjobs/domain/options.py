"""The service's own pipeline options, as DescribePipelineOptions describes them, and how the
options a client submits are read."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from beamjobs.domain.errors import InvalidArgument
from beamjobs.domain.poison import malformed

if TYPE_CHECKING:
    from beamjobs.domain.blobs import BlobStore
    from beamjobs.domain.model import Job


@dataclass(frozen=True)
class OptionDescriptor:
    name: str
    type: str  # Beam's PipelineOptionType.Enum name
    description: str
    default_value: str
    minimum: float
    maximum: float
    group: str = "Beamjobs"


JOB_TIMEOUT_SECONDS = OptionDescriptor(
    name="job_timeout_seconds",
    type="INTEGER",
    description=(
        "Fail the job (cause: timed out) when it runs longer than this many seconds "
        "(1 to 31536000; the deployment's longest job time caps it)."
    ),
    default_value="86400",
    minimum=1,
    maximum=31_536_000,  # a year: the longest a Step Functions execution runs
)
WORKER_VCPU = OptionDescriptor(
    name="worker_vcpu",
    type="NUMBER",
    description="vCPUs of the worker's Fargate task (AWS executor): 0.25, 0.5, 1, 2, 4, 8 or 16.",
    default_value="1",
    minimum=0.25,
    maximum=16,
)
WORKER_MEMORY_MB = OptionDescriptor(
    name="worker_memory_mb",
    type="INTEGER",
    description="Memory of the worker's Fargate task in MiB (AWS executor): 512 to 122880.",
    default_value="4096",
    minimum=512,
    maximum=122_880,
)

SERVICE_OPTIONS = (JOB_TIMEOUT_SECONDS, WORKER_VCPU, WORKER_MEMORY_MB)
# Which engine runs the job (beamjobs.domain.engines; DescribePipelineOptions names the
# deployment's).
ENGINE = OptionDescriptor(
    name="beamjobs_engine",
    type="STRING",
    description="The engine that runs the job: the built-in one or an upstream Beam job server.",
    default_value="",
    minimum=0,
    maximum=0,
)


def option_key(name: str) -> str:
    """The key under which Beam SDKs send an option in the options Struct."""
    return f"beam:option:{name}:v1"


def read_option(options: dict[str, Any], descriptor: OptionDescriptor) -> float:
    """A service option's value (its default when absent), finite and in its documented
    range; an INTEGER option must be a whole number. (SDKs send numbers as strings.)"""
    raw = options.get(option_key(descriptor.name))
    if raw is None:
        raw = descriptor.default_value
    name, shown = f"--{descriptor.name}", repr(str(raw)[:40])
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise InvalidArgument(f"{name} must be a number")
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be a number, not {shown}") from None
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, not {shown}")
    if descriptor.type == "INTEGER" and not value.is_integer():
        raise InvalidArgument(f"{name} must be a whole number, not {shown}")
    if not descriptor.minimum <= value <= descriptor.maximum:
        raise InvalidArgument(
            f"{name} must be {descriptor.minimum:g} to {descriptor.maximum:g}, not {shown}"
        )
    return value


def job_options(job: Job, blobs: BlobStore) -> dict[str, Any]:
    """A job's pipeline options (Beam's Struct in JSON form): inline on its record when small
    enough, else from S3."""
    try:
        return dict(json.loads(job.options_json or blobs.get(job.options_ref)))
    except ValueError as error:  # JSON that is not, or not an object
        raise malformed(f"options of job {job.job_id}", error) from error
