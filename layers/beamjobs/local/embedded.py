"""The embedded AWS: moto's server on localhost, shaped like a deployment by template.yaml.

`beamjobs serve` runs it in a process of its own (EmbeddedAwsProcess): moto and the shim then
run on separate cores instead of sharing one interpreter lock, which measurably shortens every
call; a doorbell pipe tells the shim's change feed when an item was put.

moto's application is served by cheroot (CherryPy's WSGI server) rather than by moto's own
development server, which closes the connection after every answer: each request then cost a
TCP connection and a server thread, about a third of the embedded AWS's CPU and a sixth of the
shim's. cheroot keeps connections alive, as AWS's endpoints do, and answers botocore's
`Expect: 100-continue` on an empty body (waitress 3.0 never answers that request)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import boto3
from cheroot.wsgi import Server as WsgiServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from beamjobs.local import moto_sts, moto_tuning, state_copy
from beamjobs.local.journal import Journal
from beamjobs.local.provision import provision
from beamjobs.settings import Settings

logger = logging.getLogger(__name__)
LOCAL_TABLE = "beamjobs-jobs"
LOCAL_BUCKET = "beamjobs-artifacts"
LOCAL_REGION = "us-east-1"
# moto's default account: the embedded AWS's IAM users and roles are made in it.
LOCAL_ACCOUNT = "123456789012"
# moto answers one request at a time (_OneRequestAtATime); these threads read and write
# requests meanwhile (idle keep-alive connections hold none).
_SERVER_THREADS = 16
# How long an idle keep-alive connection stays open (botocore reopens one as needed).
_IDLE_CONNECTION_SECONDS = 60


def use_offline_credentials() -> None:
    """moto accepts any credentials; make sure boto3 finds some and never looks further."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "embedded"),
        ("AWS_SECRET_ACCESS_KEY", "embedded"),
        ("AWS_DEFAULT_REGION", LOCAL_REGION),
    ):
        os.environ.setdefault(name, value)


# DynamoDB operations that put items. A job's events are only ever put (the change feed reads
# nothing else from the stream), so updates and deletes need not wake it.
_ITEM_PUTS = frozenset(
    f"DynamoDB_20120810.{operation}"
    for operation in ("PutItem", "BatchWriteItem", "TransactWriteItems")
)


class _OneRequestAtATime:
    """moto's backends are not thread-safe: concurrent DynamoDB transactions on one table were
    seen to fail inside moto ("dictionary changed size during iteration"). Real DynamoDB
    serializes them; so does this wrapper, while connections are still served by threads.
    Before each request it calls the request listeners, after each item put the put
    listeners."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.request_listeners: list[Callable[[dict[str, Any]], None]] = []
        self.put_listeners: list[Callable[[], None]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            for request_listener in self.request_listeners:
                request_listener(environ)
            answer = list(self._app(environ, start_response))
        if environ.get("HTTP_X_AMZ_TARGET") in _ITEM_PUTS:
            for listener in self.put_listeners:
                listener()
        return answer


class _LongPollsBesideOthers:
    """SQS long polls as AWS answers them: beside every other request. moto waits out a
    ReceiveMessage's WaitTimeSeconds inside its request, which here holds every other request
    back (one at a time, above). A long poll is asked instead as short polls, one every
    _SHORT_POLL_SECONDS, each in turn with the others, until a message comes or its time is up."""

    _TARGET = "AmazonSQS.ReceiveMessage"
    _SHORT_POLL_SECONDS = 0.02

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("HTTP_X_AMZ_TARGET") != self._TARGET:
            return self._app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        try:
            request = json.loads(body)
            wait = float(request.get("WaitTimeSeconds") or 0)
        except (ValueError, AttributeError, TypeError):
            request, wait = None, 0.0
        if request is not None and wait > 0:
            body = json.dumps({**request, "WaitTimeSeconds": 0}).encode()
        deadline = time.monotonic() + wait
        answered: list[Any] = []
        while True:
            answered.clear()
            short = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
            answer = b"".join(self._app(short, lambda *status: answered.append(status)))
            if wait <= 0 or b'"Messages"' in answer or time.monotonic() >= deadline:
                start_response(*answered[0])
                return [answer]
            time.sleep(self._SHORT_POLL_SECONDS)


class _LoopbackHostsOnly:
    """Requests must name a loopback host: a web page's script in a browser on this machine
    may reach 127.0.0.1 through a name of its own that resolves there (DNS rebinding), but it
    cannot send a loopback Host header with it. Anything else is refused 403, unread."""

    _NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        host = str(environ.get("HTTP_HOST", "")).lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name in self._NAMES or name.endswith(".localhost"):  # (S3's virtual hosts)
            return self._app(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"the embedded AWS answers requests for loopback hosts only\n"]


class EmbeddedAws:
    """moto's server application on 127.0.0.1 (port 0 picks a free one), in a thread."""

    def __init__(self, port: int = 0, journal: Journal | None = None) -> None:
        """`journal`: where its writes are kept, to be asked again at the next start."""
        self._port = port
        self._journal = journal
        self._server: WsgiServer | None = None
        self._app: _OneRequestAtATime | None = None
        self.endpoint_url = ""

    def start(self) -> str:
        use_offline_credentials()
        moto_tuning.install()
        moto_sts.install()
        moto_app: Callable[..., Iterable[bytes]] = moto_tuning.DirectJsonTargets(
            DomainDispatcherApplication(create_backend_app)
        )
        if self._journal is not None:
            moto_app = self._journal.wrap(moto_app)
        self._app = _OneRequestAtATime(moto_app)
        self._server = WsgiServer(
            ("127.0.0.1", self._port),
            _LoopbackHostsOnly(_LongPollsBesideOthers(self._app)),
            numthreads=_SERVER_THREADS,
            server_name="embedded-aws",
            timeout=_IDLE_CONNECTION_SECONDS,
            request_queue_size=128,
        )
        # Prepared (bound, its threads started) on a daemon thread, whose threads are daemons
        # too: the embedded AWS never holds its process's exit.
        prepared: list[BaseException | None] = []
        ready = threading.Event()

        def serve(server: WsgiServer) -> None:
            try:
                server.prepare()
                prepared.append(None)
            except BaseException as error:
                prepared.append(error)
                raise
            finally:
                ready.set()
            server.serve()

        threading.Thread(
            target=serve, args=(self._server,), name="embedded-aws", daemon=True
        ).start()
        ready.wait()
        if prepared[0] is not None:
            raise prepared[0]
        self.endpoint_url = f"http://127.0.0.1:{self._server.bind_addr[1]}"
        return self.endpoint_url

    def replay(self) -> None:
        """Ask again every write its journal holds (one request at a time, as any other), then
        record new ones there."""
        assert self._app is not None and self._journal is not None, "start() with a journal first"
        replayed = self._journal.replay(self._app)
        logger.info("replayed %d writes from the journal", replayed)
        self._journal.start()
        if self._journal.worth_compacting(replayed, lambda: state_copy.live_count(*self._own())):
            self._journal.compact(lambda: state_copy.put_again(*self._own()))
            logger.info("the journal of %d writes now holds the state they left", replayed)

    def _own(self) -> tuple[Any, Any]:
        """boto3 clients of its DynamoDB and S3, made only when a journal may be compacted
        (making them costs a start a quarter of a second)."""
        dynamodb, s3 = (
            boto3.client(service, region_name=LOCAL_REGION, endpoint_url=self.endpoint_url)
            for service in ("dynamodb", "s3")
        )
        return dynamodb, s3

    def on_request(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener` with each request's WSGI environ, one request at a time, before
        it is answered (its body unread)."""
        assert self._app is not None, "start() first"
        self._app.request_listeners.append(listener)

    def on_item_put(self, listener: Callable[[], None]) -> None:
        """Call `listener` (on a server thread) after every DynamoDB item put (how the
        doorbell of `ring_on_item_puts` is rung)."""
        assert self._app is not None, "start() first"
        self._app.put_listeners.append(listener)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


def ring_on_item_puts(aws: EmbeddedAws, doorbell_fd: int) -> None:
    """Write a byte to `doorbell_fd` after every item put. A full pipe already holds an
    unanswered ring, so a ring that does not fit is dropped."""
    os.set_blocking(doorbell_fd, False)

    def ring() -> None:
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(doorbell_fd, b".")

    aws.on_item_put(ring)


class EmbeddedAwsProcess:
    """`beamjobs aws` as a child process, provisioned from the template, with a doorbell: a
    pipe that receives a byte after every item put."""

    def __init__(self, template: Path, journal: Path | None = None) -> None:
        """`journal`: the file the embedded AWS keeps its writes in (beamjobs.local.journal)."""
        self._template = template
        self._journal = journal
        self._process: subprocess.Popen[str] | None = None
        self.doorbell = -1
        self.endpoint_url = ""

    def start(self) -> str:
        use_offline_credentials()
        self.doorbell, ring_end = os.pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "beamjobs.cli", "aws", "--port", "0"]
            + ["--template", str(self._template), "--doorbell-fd", str(ring_end)]
            + (["--journal", str(self._journal)] if self._journal else []),
            pass_fds=[ring_end],
            stdout=subprocess.PIPE,
            text=True,
        )
        os.close(ring_end)
        assert self._process.stdout is not None
        # Its first line announces where it serves: "Embedded AWS on <url>".
        announced = self._process.stdout.readline().split()
        if not announced:
            raise RuntimeError(f"the embedded AWS exited with {self._process.wait()}")
        self.endpoint_url = announced[-1]
        return self.endpoint_url

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def local_settings(endpoint_url: str) -> Settings:
    """The local table, bucket and region at `endpoint_url`; every other setting (heartbeats,
    limits, the advertised endpoint) from the environment as in AWS."""
    return Settings.from_env(
        {
            **os.environ,
            "BEAMJOBS_TABLE": LOCAL_TABLE,
            "BEAMJOBS_BUCKET": LOCAL_BUCKET,
            "AWS_REGION": LOCAL_REGION,
            "AWS_ENDPOINT_URL": endpoint_url,
        }
    )


def start_embedded(
    template: Path, port: int = 0, journal: Journal | None = None
) -> tuple[EmbeddedAws, Settings]:
    """Start the embedded AWS, create the table and bucket from the template, and ask again
    what the journal (if any) holds."""
    aws = EmbeddedAws(port, journal)
    settings = local_settings(aws.start())
    provision(settings, template)
    if journal is not None:
        aws.replay()
    return aws, settings
