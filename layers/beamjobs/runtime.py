"""Wiring: the production objects for a set of settings. Handlers, the shim and the worker build
their dependencies here, once per process."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from beamjobs import aws
from beamjobs.blobs import BlobStore
from beamjobs.executor import Executor
from beamjobs.settings import Settings
from beamjobs.store import JobStore


@dataclass(frozen=True)
class Stores:
    jobs: JobStore
    blobs: BlobStore


def stores(settings: Settings) -> Stores:
    return Stores(
        jobs=JobStore(
            aws.client("dynamodb", settings),
            settings.table_name,
            retention_days=settings.retention_days,
        ),
        blobs=BlobStore(aws.client("s3", settings), settings.bucket_name),
    )


_local_executors: dict[Settings, Executor] = {}
_local_lock = threading.Lock()


def executor(settings: Settings, jobs: JobStore) -> Executor:
    """The executor the settings name. The local one is shared by everything in the process,
    because it owns the worker processes it started."""
    from beamjobs.local_executor import ProcessExecutor

    with _local_lock:
        if settings not in _local_executors:
            _local_executors[settings] = ProcessExecutor(settings, jobs)
        return _local_executors[settings]
