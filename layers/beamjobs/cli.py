"""`beamjobs serve`: the Job API on one port with the embedded AWS (default) or an existing AWS
endpoint, handlers in process and the local executor. `beamjobs aws`: the embedded AWS alone
(so that several shims, or a restarted one, share it). `beamjobs shim`: the shim as deployed
(the shim's container on Fargate): settings from the environment, handlers reached with
lambda.invoke. `beamjobs connect`: a local proxy for SDKs to an authenticated Job API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from beamjobs import aws, runtime
from beamjobs.settings import Settings
from beamjobs.shim.invoker import Handler, Invoker

if TYPE_CHECKING:
    from beamjobs.shim.server import Authentication


def _handlers() -> dict[str, Handler]:
    from beamjobs_functions.control.app import lambda_handler as control
    from beamjobs_functions.query.app import lambda_handler as query

    return {"control": control, "query": query}


def _quiet_powertools() -> None:
    # Locally the handlers run inside the shim: no EMF metrics on stdout, no X-Ray daemon.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")


async def _serve(
    settings: Settings, host: str, port: int, doorbell: int | None = None, *, owns_aws: bool
) -> None:
    from beamjobs.local_executor import ProcessExecutor
    from beamjobs.shim.invoker import InProcessInvoker

    # The handlers read their settings from the environment, as they do in Lambda.
    os.environ.update(settings.to_env())
    _quiet_powertools()
    stores = runtime.stores(settings)
    # Started now, so that its fork server has imported Beam before the first job arrives.
    executor = runtime.executor(settings, stores.jobs)
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
        )
    finally:
        # Workers outlive a shim whose AWS outlives it too (another serve takes over). With an
        # embedded AWS that goes away now, they would have nothing left to report to.
        if owns_aws and isinstance(executor, ProcessExecutor):
            executor.stop_all()


async def _serve_deployed(host: str, port: int) -> None:
    from beamjobs.shim.invoker import LambdaInvoker

    # On AWS every call is authenticated, whatever the environment says.
    settings = Settings.from_env({**os.environ, "BEAMJOBS_REQUIRE_AUTH": "true"})
    functions = {}
    for function in ("control", "query"):
        variable = f"BEAMJOBS_{function.upper()}_FUNCTION"
        if not os.environ.get(variable):
            raise SystemExit(f"{variable} must name the deployed {function} function")
        functions[function] = os.environ[variable]
    invoker = LambdaInvoker(aws.client("lambda", settings), functions)
    stores = runtime.stores(settings)
    via = f"functions {functions}"
    await _run_shim(invoker, stores, settings, host, port, via, drain=settings.drain_seconds)


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
) -> None:
    from beamjobs.shim.server import serve_until_signalled, start_shim

    shim = await start_shim(
        invoker,
        stores,
        aws.client("dynamodbstreams", settings),
        host=host,
        port=port,
        advertised_endpoint=settings.advertised_endpoint,
        authentication=_authentication(settings),
        quotas=settings.quotas(),
    )
    if doorbell is not None:  # the embedded AWS rings it after each item put
        asyncio.get_running_loop().add_reader(doorbell, _answer, doorbell, shim.feed.wake)
    print(f"Beamjobs Job API on {host}:{shim.port} ({via})", flush=True)
    await serve_until_signalled(shim, drain)


async def _connect(endpoint: str, listen: str, plaintext: bool) -> None:
    from beamjobs.connect import Identity, start_proxy

    identity = Identity()
    who = await asyncio.to_thread(identity.who)
    proxy, address = await start_proxy(endpoint, listen, plaintext=plaintext, identity=identity)
    print(
        f"Beamjobs connect on {address}: forwarding to {endpoint} "
        f"({'plaintext' if plaintext else 'TLS'}) as {who}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.stop(5)


def _authentication(settings: Settings) -> Authentication | None:
    from beamjobs.identity import AccessPolicy
    from beamjobs.signed_identity import Verifier, sts_url

    if not settings.require_auth:
        return None
    verifier = Verifier(sts_url(settings.region, settings.endpoint_url))
    return verifier, AccessPolicy(settings.allowed_principals, settings.admin_principals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="beamjobs")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the Job API")
    serve.add_argument("--host", default="localhost")
    serve.add_argument("--port", type=int, default=8099)
    serve.add_argument("--template", type=Path, default=Path("template.yaml"))
    serve.add_argument(
        "--aws-endpoint",
        default=os.environ.get("BEAMJOBS_AWS_ENDPOINT"),
        help="use this AWS endpoint (another embedded AWS, LocalStack) instead of starting one",
    )
    serve.add_argument(
        "--worker-python",
        default=os.environ.get("BEAMJOBS_WORKER_PYTHON"),
        help="the interpreter of the workers' virtualenv (make run: .venv-worker/bin/python); "
        "by default this one",
    )
    serve.add_argument(
        "--require-auth",
        action="store_true",
        help="authenticate every call with an AWS identity (as on AWS; clients go through "
        "`beamjobs connect`), against the embedded AWS's IAM users unless --aws-endpoint",
    )
    serve.add_argument(
        "--allowed-principal",
        action="append",
        default=[],
        metavar="ARN_OR_ACCOUNT",
        help="with --require-auth: a principal (or account id) that may call; repeatable "
        "(default: every principal of the embedded AWS's account)",
    )
    serve.add_argument(
        "--admin-principal",
        action="append",
        default=[],
        metavar="ARN_OR_ACCOUNT",
        help="with --require-auth: a principal (or account id) that sees and steers every "
        "job; repeatable",
    )
    deployed = commands.add_parser("shim", help="serve the Job API as deployed on AWS")
    deployed.add_argument("--host", default="0.0.0.0")  # noqa: S104 (a container's service)
    deployed.add_argument("--port", type=int, default=8099)
    connect = commands.add_parser(
        "connect",
        help="a local proxy that forwards unmodified Beam SDKs to an authenticated Job API "
        "with your AWS identity",
    )
    connect.add_argument("--endpoint", required=True, help="the Job API's HOST:PORT")
    connect.add_argument("--listen", default="127.0.0.1:8099", help="where SDKs connect")
    connect.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS to the endpoint: only for a Job API on a private network or localhost",
    )
    aws_only = commands.add_parser("aws", help="run the embedded AWS alone")
    aws_only.add_argument("--port", type=int, default=5000)
    aws_only.add_argument("--template", type=Path, default=Path("template.yaml"))
    aws_only.add_argument(
        "--doorbell-fd",
        type=int,
        help="write a byte to this file descriptor after every item put, and exit with "
        "the parent process (how `serve` runs it)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per request to the embedded AWS would drown everything else.
    for noisy in ("werkzeug", "botocore.credentials"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.command == "shim":
        asyncio.run(_serve_deployed(args.host, args.port))
        return 0
    if args.command == "connect":
        asyncio.run(_connect(args.endpoint, args.listen, args.plaintext))
        return 0
    # Local mode only (its image has no moto): the embedded AWS and provisioning from the file.
    from beamjobs.embedded import (
        LOCAL_ACCOUNT,
        EmbeddedAwsProcess,
        exit_with_parent,
        local_settings,
        ring_on_item_puts,
        start_embedded,
        use_offline_credentials,
    )
    from beamjobs.provision import provision

    if args.command == "aws":
        alone, settings = start_embedded(args.template, args.port)
        print(f"Embedded AWS on {settings.endpoint_url}", flush=True)
        if args.doorbell_fd is not None:
            ring_on_item_puts(alone, args.doorbell_fd)
            exit_with_parent()
            os.dup2(2, 1)  # serve reads only that announcement: anything else goes to stderr
        try:
            asyncio.run(_forever())
        except KeyboardInterrupt:
            alone.stop()
        return 0

    from beamjobs.connect import LOOPBACK_HOSTS

    # A shim that authenticates no one serves this machine only.
    if not args.require_auth and args.host not in LOOPBACK_HOSTS:
        parser.error(
            f"serving without authentication on {args.host} would let anyone who reaches it "
            "run code: bind a loopback address (the default, localhost), or add --require-auth"
        )

    def settings_at(endpoint_url: str) -> Settings:
        return dataclasses.replace(
            local_settings(endpoint_url),
            worker_python=args.worker_python,
            require_auth=args.require_auth,
            allowed_principals=tuple(args.allowed_principal) or (LOCAL_ACCOUNT,),
            admin_principals=tuple(args.admin_principal),
        )

    if args.aws_endpoint:
        use_offline_credentials()
        settings = settings_at(args.aws_endpoint)
        provision(settings, args.template)
        asyncio.run(_serve(settings, args.host, args.port, owns_aws=False))
        return 0
    embedded = EmbeddedAwsProcess(args.template)
    try:
        settings = settings_at(embedded.start())
        asyncio.run(_serve(settings, args.host, args.port, embedded.doorbell, owns_aws=True))
    finally:
        embedded.stop()
    return 0


def _answer(doorbell: int, wake: Callable[[], None]) -> None:
    """Empty the doorbell pipe (the rings coalesce) and wake the change feed."""
    with contextlib.suppress(BlockingIOError):
        os.read(doorbell, 65536)
    wake()


async def _forever() -> None:
    await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
