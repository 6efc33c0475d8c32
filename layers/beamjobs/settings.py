"""Settings: one validated object, built at the edge (a handler's cold start, the CLI, the
worker's entry point) from the environment, then passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from beamjobs.errors import InvalidArgument


@dataclass(frozen=True)
class Settings:
    table_name: str
    bucket_name: str
    region: str = "us-east-1"
    # None means the SDK's own resolution (real AWS); set for the embedded AWS or LocalStack.
    endpoint_url: str | None = None
    # "local": worker processes on this machine; "stepfunctions": an execution of the run-job
    # state machine per job (state_machine_arn), running the worker on Fargate.
    executor: str = "local"
    state_machine_arn: str | None = None
    # Jobs and their history expire (DynamoDB TTL) this many days after they were prepared.
    retention_days: int = 30
    # A worker refreshes its job's heartbeat this often; a job whose worker has been silent for
    # longer than the lease is failed as "worker lost".
    heartbeat_seconds: float = 5.0
    lease_seconds: float = 30.0
    # A job whose worker has not started yet is lost only after this long in STARTING (a
    # Fargate task may take minutes to start).
    start_lease_seconds: float = 900.0
    # Worker: where an SDK worker pool sidecar listens (Fargate tasks with a DOCKER environment).
    worker_pool: str | None = None
    # Shim: the address SDKs are told to stage artifacts to (behind a load balancer it differs
    # from the bind address); None means the address the shim is bound to.
    advertised_endpoint: str | None = None
    # An artifact larger than this is refused (RESOURCE_EXHAUSTED).
    max_artifact_bytes: int = 2 * 1024**3
    # Worker: downloaded artifacts, by sha256, shared by the jobs of one machine or task.
    artifact_cache_dir: str | None = None
    # Worker: the environments standing in for Beam SDK images of other versions (locally).
    environment_cache_dir: str | None = None
    # Local executor: the interpreter workers run with, the worker's own virtualenv (whose
    # packages are the Beam SDK image's); the control plane's when unset.
    worker_python: str | None = None
    # AWS executor: no job runs longer than this, whatever its --job_timeout_seconds says.
    max_job_seconds: int = 86_400
    # AWS executor: the worker's task definition (revisions with SDK sidecars derive from it).
    worker_task_definition: str | None = None
    # Local executor: workers kept forked and ready, each waiting for a job.
    warm_workers: int = 2
    # Shim: how long open streams may follow their jobs once the shim is told to stop.
    drain_seconds: float = 110.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        missing = [name for name in ("BEAMJOBS_TABLE", "BEAMJOBS_BUCKET") if not env.get(name)]
        if missing:
            raise InvalidArgument(f"missing settings: {', '.join(missing)}")
        executor = env.get("BEAMJOBS_EXECUTOR", "local")
        if executor not in ("local", "stepfunctions"):
            raise InvalidArgument(
                f"BEAMJOBS_EXECUTOR must be local or stepfunctions, not {executor!r}"
            )
        if executor == "stepfunctions" and not (
            env.get("BEAMJOBS_STATE_MACHINE_ARN") and env.get("BEAMJOBS_WORKER_TASK_DEFINITION")
        ):
            raise InvalidArgument(
                "BEAMJOBS_EXECUTOR=stepfunctions needs BEAMJOBS_STATE_MACHINE_ARN and "
                "BEAMJOBS_WORKER_TASK_DEFINITION"
            )
        warm_workers = int(env.get("BEAMJOBS_WARM_WORKERS", "2"))
        if warm_workers < 0:
            raise InvalidArgument("BEAMJOBS_WARM_WORKERS must be 0 or more")
        return cls(
            table_name=env["BEAMJOBS_TABLE"],
            bucket_name=env["BEAMJOBS_BUCKET"],
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            executor=executor,
            state_machine_arn=env.get("BEAMJOBS_STATE_MACHINE_ARN") or None,
            retention_days=int(env.get("BEAMJOBS_RETENTION_DAYS", "30")),
            heartbeat_seconds=float(env.get("BEAMJOBS_HEARTBEAT_SECONDS", "5")),
            lease_seconds=float(env.get("BEAMJOBS_LEASE_SECONDS", "30")),
            start_lease_seconds=float(env.get("BEAMJOBS_START_LEASE_SECONDS", "900")),
            worker_pool=env.get("BEAMJOBS_WORKER_POOL") or None,
            advertised_endpoint=env.get("BEAMJOBS_ADVERTISED_ENDPOINT") or None,
            max_artifact_bytes=int(env.get("BEAMJOBS_MAX_ARTIFACT_BYTES", str(2 * 1024**3))),
            artifact_cache_dir=env.get("BEAMJOBS_ARTIFACT_CACHE") or None,
            environment_cache_dir=env.get("BEAMJOBS_ENVIRONMENT_CACHE") or None,
            worker_python=env.get("BEAMJOBS_WORKER_PYTHON") or None,
            max_job_seconds=int(env.get("BEAMJOBS_MAX_JOB_SECONDS", "86400")),
            worker_task_definition=env.get("BEAMJOBS_WORKER_TASK_DEFINITION") or None,
            warm_workers=warm_workers,
            drain_seconds=float(env.get("BEAMJOBS_DRAIN_SECONDS", "110")),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` rebuild these settings (for worker processes)."""
        env = {
            "BEAMJOBS_TABLE": self.table_name,
            "BEAMJOBS_BUCKET": self.bucket_name,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "BEAMJOBS_EXECUTOR": self.executor,
            "BEAMJOBS_RETENTION_DAYS": str(self.retention_days),
            "BEAMJOBS_HEARTBEAT_SECONDS": str(self.heartbeat_seconds),
            "BEAMJOBS_LEASE_SECONDS": str(self.lease_seconds),
            "BEAMJOBS_START_LEASE_SECONDS": str(self.start_lease_seconds),
            "BEAMJOBS_MAX_ARTIFACT_BYTES": str(self.max_artifact_bytes),
            "BEAMJOBS_MAX_JOB_SECONDS": str(self.max_job_seconds),
            "BEAMJOBS_WARM_WORKERS": str(self.warm_workers),
            "BEAMJOBS_DRAIN_SECONDS": str(self.drain_seconds),
        }
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.worker_pool:
            env["BEAMJOBS_WORKER_POOL"] = self.worker_pool
        if self.state_machine_arn:
            env["BEAMJOBS_STATE_MACHINE_ARN"] = self.state_machine_arn
        if self.worker_task_definition:
            env["BEAMJOBS_WORKER_TASK_DEFINITION"] = self.worker_task_definition
        if self.advertised_endpoint:
            env["BEAMJOBS_ADVERTISED_ENDPOINT"] = self.advertised_endpoint
        if self.artifact_cache_dir:
            env["BEAMJOBS_ARTIFACT_CACHE"] = self.artifact_cache_dir
        if self.environment_cache_dir:
            env["BEAMJOBS_ENVIRONMENT_CACHE"] = self.environment_cache_dir
        if self.worker_python:
            env["BEAMJOBS_WORKER_PYTHON"] = self.worker_python
        return env
