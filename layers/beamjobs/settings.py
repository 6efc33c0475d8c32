"""Settings: one declared table, one validated object built at the edge (a handler's cold start,
the CLI, the worker's entry point) from the environment, then passed down.

Each setting is declared once, as a field with its variable, default and parser; `from_env`
and `to_env` (the environment of the worker processes a local executor starts) both read the
table. A malformed value is a start-up error that names the variable and what it takes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from beamjobs.domain.engines import EngineChoice, parse_engine, parse_engines
from beamjobs.domain.errors import InvalidArgument
from beamjobs.domain.executor import Leases
from beamjobs.domain.identity import account_ids, parse_principals
from beamjobs.domain.limits import Quotas

Parser = Callable[[str], Any]
_QUOTAS = Quotas()


def _text(value: str) -> str | None:
    return value or None


def _choice(*choices: str) -> Parser:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return value

    return parse


def _number(kind: type[int] | type[float], *, minimum: float = 0) -> Parser:
    def parse(value: str) -> int | float:
        try:
            number = kind(value)
        except ValueError:
            raise ValueError("an integer" if kind is int else "a number") from None
        if number < minimum:
            raise ValueError(f"at least {minimum:g}")
        return number

    return parse


def _patterns(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def _task_size(value: str) -> str:
    cpu, _, memory = value.partition("/")
    if not (cpu.isdigit() and memory.isdigit()):
        raise ValueError("<cpu units>/<memory MiB>, e.g. 1024/2048")
    return value


def _flag(value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError("true or false")
    return value.lower() in ("true", "1")


def _setting(variables: str | tuple[str, ...], default: Any = None, parse: Parser = _text) -> Any:
    """A field read from the first of `variables` that is set (`default` when none is)."""
    names = (variables,) if isinstance(variables, str) else variables
    return dataclasses.field(default=default, metadata={"variables": names, "parse": parse})


@dataclass(frozen=True)
class Settings:
    table_name: str = _setting("BEAMJOBS_TABLE", "")
    # The functions' idempotency records; `<table_name>-idempotency` when unset (locally).
    idempotency_table: str = _setting("BEAMJOBS_IDEMPOTENCY_TABLE", "")
    bucket_name: str = _setting("BEAMJOBS_BUCKET", "")
    region: str = _setting(("AWS_REGION", "AWS_DEFAULT_REGION"), "us-east-1")
    # None means the SDK's own resolution (real AWS); set for the embedded AWS or LocalStack.
    endpoint_url: str | None = _setting("AWS_ENDPOINT_URL")
    # "local": worker processes on this machine; "stepfunctions": an execution of the run-job
    # state machine per job (state_machine_arn), running the worker on Fargate.
    executor: str = _setting("BEAMJOBS_EXECUTOR", "local", _choice("local", "stepfunctions"))
    state_machine_arn: str | None = _setting("BEAMJOBS_STATE_MACHINE_ARN")
    # Jobs and their history are kept at least this many days after they end (DynamoDB TTL).
    retention_days: int = _setting("BEAMJOBS_RETENTION_DAYS", 30, _number(int, minimum=1))
    # A worker refreshes its job's heartbeat this often; a job whose worker has been silent for
    # longer than the lease is failed as "worker lost".
    heartbeat_seconds: float = _setting("BEAMJOBS_HEARTBEAT_SECONDS", 5.0, _number(float))
    lease_seconds: float = _setting("BEAMJOBS_LEASE_SECONDS", 30.0, _number(float))
    # A job whose worker has not started yet is lost only after this long in STARTING (a
    # Fargate task may take minutes to start).
    start_lease_seconds: float = _setting("BEAMJOBS_START_LEASE_SECONDS", 900.0, _number(float))
    # A silent worker whose work still runs (its task, as Step Functions says; its process,
    # locally) is not lost, its channel may be throttled: only after this long is it stopped.
    running_lease_seconds: float = _setting("BEAMJOBS_RUNNING_LEASE_SECONDS", 900.0, _number(float))
    # Worker: where an SDK worker pool sidecar listens (Fargate tasks with a DOCKER environment).
    worker_pool: str | None = _setting("BEAMJOBS_WORKER_POOL")
    # Shim: the address SDKs are told to stage artifacts to (behind a load balancer it differs
    # from the bind address); None means the address the shim is bound to.
    advertised_endpoint: str | None = _setting("BEAMJOBS_ADVERTISED_ENDPOINT")
    # Worker: downloaded artifacts, by sha256, shared by the jobs of one machine or task.
    artifact_cache_dir: str | None = _setting("BEAMJOBS_ARTIFACT_CACHE")
    # Worker: the environments standing in for Beam SDK images of other versions (locally).
    environment_cache_dir: str | None = _setting("BEAMJOBS_ENVIRONMENT_CACHE")
    # Local executor: the interpreter workers run with, the worker's own virtualenv (whose
    # packages are the Beam SDK image's); the control plane's when unset.
    worker_python: str | None = _setting("BEAMJOBS_WORKER_PYTHON")
    # No job runs longer than this, whatever its --job_timeout_seconds says.
    max_job_seconds: int = _setting("BEAMJOBS_MAX_JOB_SECONDS", 86_400, _number(int, minimum=1))
    # AWS executor: the worker's task definition (revisions with SDK sidecars derive from it).
    worker_task_definition: str | None = _setting("BEAMJOBS_WORKER_TASK_DEFINITION")
    # AWS executor: the Beam SDK image the worker's image is built FROM. A DOCKER environment of
    # that image runs in the worker's own process, with no sidecar.
    worker_sdk_image: str | None = _setting("BEAMJOBS_WORKER_SDK_IMAGE")
    # AWS executor: the ECR pull-through cache of Docker Hub (`<registry>/<prefix>`). An SDK
    # sidecar's Docker Hub image is pulled through it; without one, none is pulled at all.
    docker_hub_cache: str | None = _setting("BEAMJOBS_DOCKER_HUB_CACHE")
    # In a Lambda function (the template sets it below the functions' timeout): the longest an
    # AWS call may take, its retries included (beamjobs.aws.clients.bounded_config).
    call_seconds: float | None = _setting("BEAMJOBS_CALL_SECONDS", None, _number(float, minimum=5))
    # Local executor: workers kept forked and ready, each waiting for a job.
    warm_workers: int = _setting("BEAMJOBS_WARM_WORKERS", 2, _number(int))
    # Local executor: its workers and mirrors stop with the server that started them, even a
    # killed one (it owned the AWS they report to), instead of going on for another to adopt.
    stop_with_server: bool = _setting("BEAMJOBS_STOP_WITH_SERVER", False, _flag)
    # Shim: how long open streams may follow their jobs once the shim is told to stop.
    drain_seconds: float = _setting("BEAMJOBS_DRAIN_SECONDS", 110.0, _number(float))
    # Shim, as deployed: the HTTP port of /healthz, the load balancer's health check.
    health_port: int = _setting("BEAMJOBS_HEALTH_PORT", 8098, _number(int))
    # Upstream Beam Job API endpoints a job may run on (beamjobs.domain.engines), `NAME=HOST:PORT`
    # each; the engine of a job that names none (the built-in one when unset); and the engine
    # of streaming pipelines (none: they are refused at Prepare).
    upstream_engines: tuple[str, ...] = _setting("BEAMJOBS_UPSTREAM_ENGINES", (), parse_engines)
    default_engine: str | None = _setting("BEAMJOBS_DEFAULT_ENGINE")
    streaming_engine: str | None = _setting("BEAMJOBS_STREAMING_ENGINE")
    # Beam's Prism runner (its binary), which makes `prism` a built-in engine: each job on it
    # runs in a Prism its mirror starts (beamjobs.upstream.prism).
    prism: str | None = _setting("BEAMJOBS_PRISM")
    # Beam's Python boot program (the SDK image's entry point; `make engines` builds it): with
    # it, the built-in Prism runs EMBEDDED Python environments as PROCESS ones, the boot run
    # with the workers' interpreter (beamjobs.upstream.prism).
    python_boot: str | None = _setting("BEAMJOBS_PYTHON_BOOT")
    # Upstream engines that are Beam's Flink job server, each with its Flink cluster's REST API,
    # `NAME=HOST:PORT`: Beam's Flink job server does not cancel the Flink job itself, so the
    # mirror does (beamjobs.upstream.flink).
    flink_rest: tuple[str, ...] = _setting("BEAMJOBS_FLINK_REST", (), parse_engines)
    # AWS executor: the mirror's task definition (beamjobs.upstream.mirror, for upstream engines).
    mirror_task_definition: str | None = _setting("BEAMJOBS_MIRROR_TASK_DEFINITION")
    # Mirror: the upstream engine it runs its job on, by name and Job API endpoint.
    upstream_engine: str | None = _setting("BEAMJOBS_UPSTREAM_ENGINE")
    upstream_endpoint: str | None = _setting("BEAMJOBS_UPSTREAM_ENDPOINT")

    # AWS executor: the warm pool's task size, "<cpu units>/<memory MiB>" (the template's
    # WorkerCpu/WorkerMemory): a job of that size is offered to the pool before it starts cold.
    # Unset: the deployment has no pool.
    warm_pool_size: str | None = _setting("BEAMJOBS_WARM_POOL_SIZE", None, _task_size)
    # Worker function: the ARN of the warm pool's task role, whose tasks take offered jobs
    # (beamjobs.app.warm_offers). Pooled worker: the queue the offers arrive on.
    warm_pool_role: str | None = _setting("BEAMJOBS_WARM_POOL_ROLE")
    # Worker function: the ECS cluster of the pool's tasks (it protects those running a job).
    cluster: str | None = _setting("BEAMJOBS_CLUSTER")
    offers_queue: str | None = _setting("BEAMJOBS_OFFERS_QUEUE")
    # Worker: the function of the worker channel it reports through (locally, "worker" at the
    # executor's own endpoint), and its job's worker secret.
    worker_function: str | None = _setting("BEAMJOBS_WORKER_FUNCTION")
    worker_secret: str | None = _setting("BEAMJOBS_WORKER_SECRET")
    # Shim: every RPC must prove an AWS identity (beamjobs.aws.signed_identity) of a principal in
    # allowed_principals; those in admin_principals see and steer every job.
    require_auth: bool = _setting("BEAMJOBS_REQUIRE_AUTH", False, _flag)
    allowed_principals: tuple[str, ...] = _setting(
        "BEAMJOBS_ALLOWED_PRINCIPALS", (), parse_principals
    )
    admin_principals: tuple[str, ...] = _setting("BEAMJOBS_ADMIN_PRINCIPALS", (), parse_principals)
    # Shim: the deployment's worker and mirror task roles, which may never call.
    worker_principals: tuple[str, ...] = _setting(
        "BEAMJOBS_WORKER_PRINCIPALS", (), parse_principals
    )

    # Shim and control/query functions: the key the shim signs its events' caller claims with
    # (beamjobs.domain.caller_claims): on AWS read from the Secrets Manager secret named,
    # locally given as is (`serve` makes one per run).
    caller_key_secret: str | None = _setting("BEAMJOBS_CALLER_KEY_SECRET")
    caller_key: str | None = _setting("BEAMJOBS_CALLER_KEY")

    # Quotas, per principal (beamjobs.domain.limits.Quotas says what each bounds).
    quota_concurrent_jobs: int = _setting(
        "BEAMJOBS_QUOTA_CONCURRENT_JOBS", _QUOTAS.concurrent_jobs, _number(int, minimum=1)
    )
    quota_prepares_per_minute: int = _setting(
        "BEAMJOBS_QUOTA_PREPARES_PER_MINUTE", _QUOTAS.prepares_per_minute, _number(int, minimum=1)
    )
    quota_artifact_bytes_per_job: int = _setting(
        "BEAMJOBS_QUOTA_ARTIFACT_BYTES_PER_JOB",
        _QUOTAS.artifact_bytes_per_job,
        _number(int, minimum=1),
    )
    quota_worker_vcpu: float = _setting(
        "BEAMJOBS_QUOTA_WORKER_VCPU", _QUOTAS.max_worker_vcpu, _number(float, minimum=0.25)
    )
    quota_worker_memory_mb: int = _setting(
        "BEAMJOBS_QUOTA_WORKER_MEMORY_MB", _QUOTAS.max_worker_memory_mb, _number(int, minimum=512)
    )
    quota_images: tuple[str, ...] = _setting(
        "BEAMJOBS_QUOTA_IMAGES", _QUOTAS.allowed_images, _patterns
    )
    quota_streams: int = _setting(
        "BEAMJOBS_QUOTA_STREAMS", _QUOTAS.streams_per_principal, _number(int, minimum=1)
    )
    max_subscribers: int = _setting(
        "BEAMJOBS_MAX_SUBSCRIBERS", _QUOTAS.total_subscribers, _number(int, minimum=1)
    )
    staging_idle_seconds: float = _setting(
        "BEAMJOBS_STAGING_IDLE_SECONDS", _QUOTAS.staging_idle_seconds, _number(float)
    )

    def leases(self) -> Leases:
        return Leases(self.lease_seconds, self.start_lease_seconds, self.running_lease_seconds)

    def quotas(self) -> Quotas:
        return Quotas(
            concurrent_jobs=self.quota_concurrent_jobs,
            prepares_per_minute=self.quota_prepares_per_minute,
            artifact_bytes_per_job=self.quota_artifact_bytes_per_job,
            max_worker_vcpu=self.quota_worker_vcpu,
            max_worker_memory_mb=self.quota_worker_memory_mb,
            allowed_images=self.quota_images,
            streams_per_principal=self.quota_streams,
            total_subscribers=self.max_subscribers,
            staging_idle_seconds=self.staging_idle_seconds,
        )

    def engine_choice(self) -> EngineChoice:
        """The engines; InvalidArgument when they are not consistent (a Flink REST address
        of an engine that is not an upstream one included)."""
        builtin = "fargate" if self.executor == "stepfunctions" else "local"
        choice = EngineChoice.of(
            builtin,
            self.upstream_engines,
            self.default_engine,
            self.streaming_engine,
            prism=bool(self.prism),
        )
        named = (parse_engine(spec)[0] for spec in self.flink_rest)
        strangers = [name for name in named if name not in choice.upstreams]
        if strangers:
            raise InvalidArgument(
                f"a Flink REST address is for an upstream engine: {', '.join(strangers)} "
                f"is not one ({', '.join(choice.upstreams) or 'there are none'})"
            )
        return choice

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, worker: bool = False) -> Settings:
        """The settings in `env` (the process's environment by default); InvalidArgument
        naming every setting that is malformed or missing. A `worker`'s settings name no
        table or bucket (it has no access to them), only its channel."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        problems: list[str] = []
        for field in dataclasses.fields(cls):
            variables = field.metadata["variables"]
            variable = next((name for name in variables if env.get(name)), None)
            if variable is None:
                continue
            try:
                values[field.name] = field.metadata["parse"](env[variable])
            except ValueError as error:
                problems.append(f"{variable}={env[variable]!r} must be {error}")
        if problems:
            raise InvalidArgument(f"malformed settings: {'; '.join(problems)}")
        settings = cls(**values)
        settings._check(worker)
        return settings

    @classmethod
    def variables(cls) -> frozenset[str]:
        """Every environment variable a setting is read from."""
        return frozenset(
            name for field in dataclasses.fields(cls) for name in field.metadata["variables"]
        )

    def _check(self, worker: bool) -> None:
        if worker:
            if not self.worker_function:
                raise InvalidArgument("missing settings: BEAMJOBS_WORKER_FUNCTION")
            return
        required: dict[str, str | None] = {
            "BEAMJOBS_TABLE": self.table_name,
            "BEAMJOBS_BUCKET": self.bucket_name,
        }
        if self.executor == "stepfunctions":
            required["BEAMJOBS_STATE_MACHINE_ARN"] = self.state_machine_arn
            required["BEAMJOBS_WORKER_TASK_DEFINITION"] = self.worker_task_definition
            if self.upstream_engines:
                required["BEAMJOBS_MIRROR_TASK_DEFINITION"] = self.mirror_task_definition
        if self.require_auth:
            required["BEAMJOBS_ALLOWED_PRINCIPALS"] = ",".join(self.allowed_principals)
            accounts = account_ids(self.admin_principals)
            if accounts:
                raise InvalidArgument(
                    f"BEAMJOBS_ADMIN_PRINCIPALS (the template's AdminPrincipals) names account "
                    f"{', '.join(accounts)}: every principal of it, the deployment's own roles "
                    "included, would see and steer every job. Name the admins' user or role ARNs"
                )
        missing = [variable for variable, value in required.items() if not value]
        if missing:
            raise InvalidArgument(f"missing settings: {', '.join(missing)}")
        self.engine_choice()  # the engines named must be among those declared

    @property
    def idempotency_table_name(self) -> str:
        return self.idempotency_table or f"{self.table_name}-idempotency"

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` rebuild these settings (for worker processes)."""
        env: dict[str, str] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or value == "" or value == ():
                continue
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            for variable in field.metadata["variables"]:
                env[variable] = text
        return env
