"""The `beamjobs` command.

- `beamjobs serve`: the Job API on one port with the embedded AWS (default) or an existing AWS
  endpoint, handlers in process and the local executor.
- `beamjobs aws`: the embedded AWS alone (so that several shims, or a restarted one, share it).
- `beamjobs shim`: the shim as deployed (the shim's container on Fargate): settings from the
  environment, handlers reached with lambda.invoke.
- `beamjobs connect`: a local proxy for SDKs to an authenticated Job API.
- `beamjobs jobs`: see and steer jobs (beamjobs.cli.jobs).
- `beamjobs mirror JOB_ID`: a mirror task's whole life (beamjobs.upstream.mirror).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from beamjobs import runtime
from beamjobs.aws import clients
from beamjobs.aws.caller_key import caller_key
from beamjobs.aws.invoker import Handler, Invoker
from beamjobs.cli.jobs import jobs as jobs_commands
from beamjobs.domain.errors import InvalidArgument
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.store import JobStore
from beamjobs.settings import Settings
from beamjobs.startup import end_with_parent, started

if TYPE_CHECKING:
    from beamjobs.shim.server import Authentication


def _handlers() -> dict[str, Handler]:
    from beamjobs_functions.control.app import lambda_handler as control
    from beamjobs_functions.query.app import lambda_handler as query

    return {"control": control, "query": query}


def _worker_function(settings: Settings) -> Handler:
    from beamjobs_functions.worker.app import handler_for

    return handler_for(settings)


def _quiet_powertools() -> None:
    # Locally the handlers run inside the shim: no EMF metrics on stdout, no X-Ray daemon.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")


async def _serve(
    settings: Settings,
    host: str,
    port: int,
    doorbell: int | None = None,
    *,
    owns_aws: bool,
    dashboard_port: int | None,
) -> None:
    from beamjobs.local.executor import ProcessExecutor
    from beamjobs.local.invoker import InProcessInvoker

    # Workers outlive a server whose AWS outlives it too (another serve takes over). With an
    # embedded AWS that goes with it, they would have nothing left to report to: they stop with
    # it, even when it is killed.
    settings = dataclasses.replace(settings, stop_with_server=owns_aws)
    # The handlers read their settings from the environment, as they do in Lambda.
    os.environ.update(settings.to_env())
    _quiet_powertools()
    stores = runtime.stores(settings)
    if owns_aws:
        _end_jobs_of_the_last_run(stores.jobs)
    # Started now, so that its fork server has imported Beam before the first job arrives.
    executor = ProcessExecutor(settings, stores.jobs, stores.blobs, _worker_function(settings))
    runtime.install_executor(settings, executor)
    invoker = InProcessInvoker(_handlers())
    try:
        # A shim whose AWS goes with it has nothing to drain for: its workers stop too.
        await _run_shim(
            invoker,
            stores,
            settings,
            host,
            port,
            f"AWS at {settings.endpoint_url}",
            doorbell,
            drain=0.0 if owns_aws else settings.drain_seconds,
            dashboard=(dashboard_port, True) if dashboard_port is not None else None,
        )
    finally:
        if settings.stop_with_server:
            executor.stop_all()


# Why a job still active in a kept history ended: it belonged to the server before this one.
SERVER_STOPPED = "the server stopped while the job was active (its worker stopped with it)"


def _end_jobs_of_the_last_run(store: JobStore) -> None:
    """Jobs a kept history holds as active had their workers in the server that stopped: each
    ends in a true state (FAILED, or CANCELLED / DRAINED if it was being stopped)."""
    jobs = Jobs(store)
    for job in store.active_jobs():
        ended = jobs.settle(job.job_id, SERVER_STOPPED)
        logging.getLogger(__name__).warning("job %s: %s", job.job_id, ended.state.value)


async def _serve_deployed(host: str, port: int) -> None:
    from beamjobs.aws.invoker import LambdaInvoker

    # On AWS every call is authenticated, whatever the environment says.
    settings = Settings.from_env({**os.environ, "BEAMJOBS_REQUIRE_AUTH": "true"})
    functions = {}
    for function in ("control", "query"):
        variable = f"BEAMJOBS_{function.upper()}_FUNCTION"
        if not os.environ.get(variable):
            raise SystemExit(f"{variable} must name the deployed {function} function")
        functions[function] = os.environ[variable]
    invoker = LambdaInvoker(clients.client("lambda", settings), functions)
    stores = runtime.stores(settings)
    via = f"functions {functions}"
    await _run_shim(
        invoker,
        stores,
        settings,
        host,
        port,
        via,
        drain=settings.drain_seconds,
        dashboard=(settings.health_port, False),
    )


async def _run_shim(
    invoker: Invoker,
    stores: runtime.Stores,
    settings: Settings,
    host: str,
    port: int,
    via: str,
    doorbell: int | None = None,
    *,
    drain: float,
    dashboard: tuple[int, bool] | None = None,
) -> None:
    """Serve until signalled; with `dashboard` (a port, and whether to serve pages), the
    dashboard too, or its /healthz alone (on every interface: the load balancer's check)."""
    from beamjobs.dashboard.server import start_dashboard
    from beamjobs.shim.server import serve_until_signalled, start_shim

    shim = await start_shim(
        invoker,
        stores,
        clients.client("dynamodbstreams", settings),
        host=host,
        port=port,
        advertised_endpoint=settings.advertised_endpoint,
        authentication=_authentication(settings, host),
        caller_key=caller_key(settings),
        quotas=settings.quotas(),
        engines=settings.engine_choice(),
    )
    if doorbell is not None:  # the embedded AWS rings it after each item put
        shim.feed.listen_to_doorbell(doorbell)
    print(f"Beamjobs Job API on {host}:{shim.port} ({via})", flush=True)
    runner = None
    if dashboard is not None:
        dashboard_port, pages = dashboard
        # Pages for this machine only; /healthz alone wherever the load balancer checks.
        runner, bound = await start_dashboard(
            f"localhost:{shim.port}",
            "localhost" if pages else host,
            dashboard_port,
            shim.health,
            pages=pages,
        )
        if pages:
            print(f"Beamjobs dashboard on http://localhost:{bound}", flush=True)
    started()
    try:
        await serve_until_signalled(shim, drain)
    finally:
        if runner is not None:
            await runner.cleanup()


async def _connect(endpoint: str, listen: str, plaintext: bool, dashboard_port: int | None) -> None:
    from beamjobs.cli.connect import Identity, start_proxy
    from beamjobs.dashboard.server import start_dashboard

    identity = Identity(endpoint)
    who = await asyncio.to_thread(identity.who)
    proxy, address = await start_proxy(endpoint, listen, plaintext=plaintext, identity=identity)
    print(
        f"Beamjobs connect on {address}: forwarding to {endpoint} "
        f"({'plaintext' if plaintext else 'TLS'}) as {who}",
        flush=True,
    )
    runner = None
    if dashboard_port is not None:
        # The dashboard reads through the proxy: it sees what this identity may see.
        runner, bound = await start_dashboard(
            address, "localhost", dashboard_port, lambda: (True, "ok")
        )
        print(f"Beamjobs dashboard on http://localhost:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if runner is not None:
        await runner.cleanup()
    await proxy.stop(5)


def _authentication(settings: Settings, host: str) -> Authentication | None:
    from beamjobs.aws.signed_identity import Verifier, sts_url
    from beamjobs.domain.identity import AccessPolicy
    from beamjobs.shim.server import deployment_hosts

    if not settings.require_auth:
        return None
    verifier = Verifier(
        sts_url(settings.region, settings.endpoint_url),
        deployment_hosts(host, settings.advertised_endpoint),
    )
    policy = AccessPolicy(
        settings.allowed_principals, settings.admin_principals, settings.worker_principals
    )
    return verifier, policy


def _engines(specs: tuple[str, ...]) -> tuple[str, ...]:
    from beamjobs.domain.engines import parse_engines

    try:
        return parse_engines(",".join(specs))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _log_quietly() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per request to the embedded AWS would drown everything else.
    for noisy in ("werkzeug", "botocore.credentials"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _dashboard_options(command: Callable[..., None]) -> Callable[..., None]:
    """--dashboard-port N (0: any free port) and --no-dashboard, as `dashboard`: a port or None."""

    def dashboard(context: click.Context, _: click.Parameter, port: int) -> int | None:
        return None if context.params.pop("no_dashboard", False) else port

    command = click.option(
        "--dashboard-port",
        "dashboard",
        type=click.IntRange(0, 65535),
        default=8098,
        show_default=True,
        envvar="BEAMJOBS_DASHBOARD_PORT",
        callback=dashboard,
        help="the dashboard's port, on localhost (0: any free port)",
    )(command)
    return click.option("--no-dashboard", is_flag=True, is_eager=True, help="serve no dashboard")(
        command
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Beamjobs: a serverless Apache Beam Job Service on AWS."""


@cli.command()
@click.option("--host", default="localhost", show_default=True)
@click.option("--port", type=int, default=8099, show_default=True)
@click.option("--template", type=click.Path(path_type=Path), default=Path("template.yaml"))
@click.option(
    "--aws-endpoint",
    envvar="BEAMJOBS_AWS_ENDPOINT",
    help="use this AWS endpoint (another embedded AWS, LocalStack) instead of starting one",
)
@click.option(
    "--worker-python",
    envvar="BEAMJOBS_WORKER_PYTHON",
    help="the interpreter of the workers' virtualenv (make run: .venv-worker/bin/python); "
    "by default this one",
)
@click.option(
    "--require-auth",
    is_flag=True,
    help="authenticate every call with an AWS identity (as on AWS; clients go through "
    "`beamjobs connect`), against the embedded AWS's IAM users unless --aws-endpoint",
)
@click.option(
    "--allowed-principal",
    multiple=True,
    metavar="ARN_OR_ACCOUNT",
    help="with --require-auth: a principal (or account id) that may call; repeatable "
    "(default: every principal of the embedded AWS's account)",
)
@click.option(
    "--admin-principal",
    multiple=True,
    metavar="ARN",
    help="with --require-auth: a user or role ARN that sees and steers every job; repeatable",
)
@click.option(
    "--engine",
    "engines",
    multiple=True,
    metavar="NAME=HOST:PORT",
    callback=lambda _context, _param, specs: _engines(specs),
    help="an upstream engine: a Beam Job API endpoint (Flink's or Spark's job server, Prism, "
    "another Beamjobs) that jobs choose with --beamjobs_engine=NAME; repeatable",
)
@click.option(
    "--flink-rest",
    multiple=True,
    metavar="NAME=HOST:PORT",
    callback=lambda _context, _param, specs: _engines(specs),
    help="the REST API of the Flink cluster behind engine NAME, Beam's Flink job server: "
    "Cancel then stops the Flink job too, which that job server leaves running; repeatable",
)
@click.option(
    "--default-engine", metavar="NAME", help="the engine of jobs that choose none (default: local)"
)
@click.option(
    "--streaming-engine",
    metavar="NAME",
    help="the engine of streaming (unbounded) pipelines that choose none (default: prism with "
    "--prism, else refused)",
)
@click.option(
    "--prism",
    type=click.Path(exists=True, dir_okay=False, resolve_path=True),
    envvar="BEAMJOBS_PRISM",
    help="Beam's Prism runner (its binary; `make engines` builds it): the built-in engine "
    "`prism`, which runs streaming pipelines",
)
@click.option(
    "--python-boot",
    type=click.Path(exists=True, dir_okay=False, resolve_path=True),
    envvar="BEAMJOBS_PYTHON_BOOT",
    help="Beam's Python boot program (`make engines` builds it): with --prism and "
    "--worker-python, Prism runs EMBEDDED Python environments as PROCESS ones",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="BEAMJOBS_STATE_DIR",
    help="keep the embedded AWS's jobs, messages, metrics, pipelines and artifacts here, "
    "across restarts (`make run`: .state in the clone); without it they last as long as the "
    "process",
)
@_dashboard_options
def serve(
    host: str,
    port: int,
    template: Path,
    aws_endpoint: str | None,
    worker_python: str | None,
    require_auth: bool,
    allowed_principal: tuple[str, ...],
    admin_principal: tuple[str, ...],
    engines: tuple[str, ...],
    flink_rest: tuple[str, ...],
    default_engine: str | None,
    streaming_engine: str | None,
    prism: str | None,
    python_boot: str | None,
    state_dir: Path | None,
    dashboard: int | None,
) -> None:
    """Serve the Job API with the embedded AWS (or --aws-endpoint) and the local executor."""
    from beamjobs.cli.connect import LOOPBACK_HOSTS

    # A shim that authenticates no one serves this machine only.
    if not require_auth and host not in LOOPBACK_HOSTS:
        raise click.UsageError(
            f"serving without authentication on {host} would let anyone who reaches it "
            "run code: bind a loopback address (the default, localhost), or add --require-auth"
        )
    _log_quietly()
    # Local mode only (its image has no moto): the embedded AWS and provisioning from the file.
    from beamjobs.local.embedded import (
        LOCAL_ACCOUNT,
        EmbeddedAwsProcess,
        local_settings,
        use_offline_credentials,
    )
    from beamjobs.local.journal import JOURNAL
    from beamjobs.local.provision import provision

    def settings_at(endpoint_url: str) -> Settings:
        local = local_settings(endpoint_url)
        settings = dataclasses.replace(
            local,
            worker_python=worker_python,
            require_auth=require_auth,
            allowed_principals=allowed_principal or (LOCAL_ACCOUNT,),
            admin_principals=admin_principal,
            upstream_engines=engines,
            flink_rest=flink_rest,
            default_engine=default_engine,
            streaming_engine=streaming_engine,
            prism=prism,
            python_boot=python_boot,
            # This run's own: its shim signs, and its handlers (in this process) verify.
            caller_key=local.caller_key or secrets.token_hex(32),
        )
        try:
            settings.engine_choice()
        except InvalidArgument as error:
            raise click.UsageError(error.message) from None
        return settings

    if aws_endpoint and state_dir:
        raise click.UsageError(
            "--state-dir keeps the embedded AWS's state: not with --aws-endpoint"
        )
    if aws_endpoint:
        use_offline_credentials()
        settings = settings_at(aws_endpoint)
        provision(settings, template)
        asyncio.run(_serve(settings, host, port, owns_aws=False, dashboard_port=dashboard))
        return
    embedded = EmbeddedAwsProcess(template, state_dir / JOURNAL if state_dir else None)
    try:
        settings = settings_at(embedded.start())
        asyncio.run(
            _serve(settings, host, port, embedded.doorbell, owns_aws=True, dashboard_port=dashboard)
        )
    finally:
        embedded.stop()


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True)  # noqa: S104 (a container's)
@click.option("--port", type=int, default=8099, show_default=True)
def shim(host: str, port: int) -> None:
    """Serve the Job API as deployed on AWS (settings from the environment)."""
    _log_quietly()
    asyncio.run(_serve_deployed(host, port))


@cli.command()
@click.option("--endpoint", required=True, help="the Job API's HOST:PORT")
@click.option("--listen", default="127.0.0.1:8099", show_default=True, help="where SDKs connect")
@click.option(
    "--plaintext",
    is_flag=True,
    help="no TLS to the endpoint: only for a Job API on a private network or localhost",
)
@_dashboard_options
def connect(endpoint: str, listen: str, plaintext: bool, dashboard: int | None) -> None:
    """A local proxy that forwards unmodified Beam SDKs to an authenticated Job API with your
    AWS identity."""
    _log_quietly()
    asyncio.run(_connect(endpoint, listen, plaintext, dashboard))


@cli.command("aws")
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--template", type=click.Path(path_type=Path), default=Path("template.yaml"))
@click.option(
    "--doorbell-fd",
    type=int,
    help="write a byte to this file descriptor after every item put, and exit with the parent "
    "process (how `serve` runs it)",
)
@click.option(
    "--journal",
    type=click.Path(path_type=Path, dir_okay=False),
    help="keep every write in this file, and ask again what it holds at start",
)
def aws_alone(port: int, template: Path, doorbell_fd: int | None, journal: Path | None) -> None:
    """Run the embedded AWS alone."""
    _log_quietly()
    from beamjobs.local.embedded import ring_on_item_puts, start_embedded
    from beamjobs.local.journal import Journal

    if doorbell_fd is not None:
        # Before anything else: a parent that dies once we have announced ourselves, or
        # while we provision, must not be missed.
        end_with_parent(lambda: os._exit(0))
    alone, settings = start_embedded(template, port, Journal(journal) if journal else None)
    if doorbell_fd is not None:
        ring_on_item_puts(alone, doorbell_fd)
    started()
    print(f"Embedded AWS on {settings.endpoint_url}", flush=True)
    if doorbell_fd is not None:
        os.dup2(2, 1)  # serve reads only that announcement: anything else goes to stderr
    try:
        asyncio.run(_forever())
    except KeyboardInterrupt:
        alone.stop()


cli.add_command(jobs_commands)


@cli.command()
@click.argument("job_id")
def mirror(job_id: str) -> None:
    """Follow a job on its upstream engine (a mirror task: settings from the environment)."""
    from beamjobs.upstream.mirror import main as mirror_main

    sys.exit(mirror_main([job_id]))


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (e.g. `eval "$(beamjobs completion bash)"`)."""
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    assert completer is not None  # every choice has one
    click.echo(completer(cli, {}, "beamjobs", "_BEAMJOBS_COMPLETE").source())


def main(argv: list[str] | None = None) -> int:
    """The `beamjobs` command (exits with its status)."""
    cli.main(args=argv, prog_name="beamjobs")
    return 0


async def _forever() -> None:
    await asyncio.Event().wait()
