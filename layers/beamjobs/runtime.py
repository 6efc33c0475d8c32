"""Wiring: the production objects for a set of settings. Handlers, the shim and the worker build
their dependencies here, once per process."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

from beamjobs import aws
from beamjobs.artifacts import ArtifactStore
from beamjobs.blobs import BlobStore
from beamjobs.dynamodb_store import DynamoJobStore
from beamjobs.engines import Engines, MirrorStarter
from beamjobs.executor import Executor
from beamjobs.jobs import item_lifetime
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
            aws.client("dynamodb", settings), settings.table_name, item_lifetime=lifetime
        ),
        outcomes=DynamoJobStore(
            aws.client("dynamodb", settings, patient=True),
            settings.table_name,
            item_lifetime=lifetime,
        ),
        blobs=BlobStore(aws.client("s3", settings), settings.bucket_name),
        artifacts=ArtifactStore(aws.client("s3", settings), settings.bucket_name),
    )


_executors: dict[Settings, Executor] = {}
_executors_lock = threading.Lock()


def executor(settings: Settings, jobs: DynamoJobStore) -> Executor:
    """The executor for these settings, shared by everything in the process: the local one owns
    the worker processes it started, so there must be only one."""
    with _executors_lock:
        if settings not in _executors:
            _executors[settings] = _new_executor(settings, jobs)
        return _executors[settings]


def _new_executor(settings: Settings, jobs: DynamoJobStore) -> Executor:
    blobs = stores(settings).blobs
    if settings.executor == "stepfunctions":
        from beamjobs.stepfunctions import StepFunctionsExecutor

        # Settings.from_env checks both.
        assert settings.state_machine_arn and settings.worker_task_definition
        return StepFunctionsExecutor(
            aws.client("stepfunctions", settings),
            aws.client("ecs", settings),
            settings.state_machine_arn,
            blobs,
            worker_task_definition=settings.worker_task_definition,
            mirror_task_definition=settings.mirror_task_definition,
            max_job_seconds=settings.max_job_seconds,
        )
    from beamjobs.local_executor import ProcessExecutor

    return ProcessExecutor(settings, jobs, blobs, stores(settings).outcomes)


def engines(settings: Settings, jobs: DynamoJobStore) -> Engines:
    """The deployment's engines: the built-in executor, and mirrors for the upstream ones
    (started by the executor that also runs workers: a process locally, a task on AWS)."""
    builtin = executor(settings, jobs)
    if not isinstance(builtin, MirrorStarter):  # an executor a test brought
        return Engines.only(builtin)
    return Engines(settings.engine_choice(), builtin, builtin)


def install_executor(settings: Settings, chosen: Executor) -> None:
    """Make `chosen` the executor for these settings (a host that brings its own, e.g. tests)."""
    with _executors_lock:
        _executors[settings] = chosen
