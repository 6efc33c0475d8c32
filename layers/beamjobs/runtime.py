"""Wiring: the production objects for a set of settings. Handlers, the shim and the worker build
their dependencies here, once per process."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

from beamjobs.aws import clients
from beamjobs.aws.artifact_store import ArtifactStore
from beamjobs.aws.blobs import S3BlobStore
from beamjobs.aws.dynamodb_store import DynamoJobStore
from beamjobs.domain.blobs import BlobStore
from beamjobs.domain.engines import Engines, MirrorStarter
from beamjobs.domain.executor import Executor
from beamjobs.domain.jobs import item_lifetime
from beamjobs.settings import Settings


@dataclass(frozen=True)
class Stores:
    jobs: DynamoJobStore
    blobs: BlobStore
    artifacts: ArtifactStore
    # The same table through a patient client: for recording a job's outcome once its work is
    # done, which a passing throttle must not turn into "worker lost".
    outcomes: DynamoJobStore


@functools.cache
def stores(settings: Settings) -> Stores:
    """The stores for these settings, made once per process: the shim and the handlers it runs
    in process share them (and so the blob store's memory of what was just written)."""
    lifetime = item_lifetime(
        retention_seconds=settings.retention_days * 86_400,
        max_job_seconds=settings.max_job_seconds,
    )
    return Stores(
        jobs=DynamoJobStore(
            clients.client("dynamodb", settings), settings.table_name, item_lifetime=lifetime
        ),
        outcomes=DynamoJobStore(
            clients.client("dynamodb", settings, budget="patient"),
            settings.table_name,
            item_lifetime=lifetime,
        ),
        blobs=S3BlobStore(clients.client("s3", settings), settings.bucket_name),
        artifacts=ArtifactStore(clients.client("s3", settings), settings.bucket_name),
    )


_executors: dict[Settings, Executor] = {}
_executors_lock = threading.Lock()


def executor(settings: Settings) -> Executor:
    """The executor for these settings, shared by everything in the process: the local one owns
    the worker processes it started, so there must be only one."""
    with _executors_lock:
        if settings not in _executors:
            _executors[settings] = _new_executor(settings)
        return _executors[settings]


def _new_executor(settings: Settings) -> Executor:
    if settings.executor == "stepfunctions":
        from beamjobs.aws.stepfunctions import StepFunctionsExecutor

        # Settings.from_env checks both.
        assert settings.state_machine_arn and settings.worker_task_definition
        return StepFunctionsExecutor(
            clients.client("stepfunctions", settings),
            clients.client("ecs", settings),
            settings.state_machine_arn,
            stores(settings).blobs,
            bucket=settings.bucket_name,
            worker_task_definition=settings.worker_task_definition,
            mirror_task_definition=settings.mirror_task_definition,
            max_job_seconds=settings.max_job_seconds,
            worker_sdk_image=settings.worker_sdk_image,
            docker_hub_cache=settings.docker_hub_cache,
            warm_pool_size=settings.warm_pool_size,
        )
    # The local executor serves its workers' channel, so only the process that runs it (which
    # has the worker function's handler) can make it: `beamjobs serve` installs it.
    raise RuntimeError(f"no {settings.executor!r} executor was installed in this process")


def engines(settings: Settings) -> Engines:
    """The deployment's engines: the built-in executor, and mirrors for the upstream ones
    (started by the executor that also runs workers: a process locally, a task on AWS)."""
    builtin = executor(settings)
    if not isinstance(builtin, MirrorStarter):  # an executor a test brought
        return Engines.only(builtin)
    return Engines(settings.engine_choice(), builtin, builtin)


def install_executor(settings: Settings, chosen: Executor) -> None:
    """Make `chosen` the executor for these settings (a host that brings its own, e.g. tests)."""
    with _executors_lock:
        _executors[settings] = chosen
