"""`beamjobs jobs`: list, describe, cancel, drain, follow and measure jobs from a terminal.

Output is a table on a terminal and JSON otherwise (`--format` chooses). JSON field names are
the proto field names of beamjobs/api/jobs.proto and job_api.proto (times as RFC 3339 text,
states and importances by name); `metrics` and `graph` print the records of
beamjobs.pipeline.metrics and beamjobs.pipeline.graph (a metric also names its PCollection:
`pcollection_name`). A command's JOB_ID is a job's id, a prefix of it that no other job's id
has, or a job's name that no other job has. Exit codes: 0 ok, 1 any other failure, 2 usage (or
a request the service calls invalid), 3 not found, 4 not authenticated or not allowed.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import grpc
from rich.console import Console
from rich.table import Table
from rich.text import Text

from beamjobs.api import job_api_pb2, job_api_pb2_grpc, jobs_pb2, jobs_pb2_grpc, pipeline_pb2
from beamjobs.domain.model import IMPORTANCES
from beamjobs.domain.states import JobState
from beamjobs.pipeline.graph import pcollection_names, pipeline_graph
from beamjobs.pipeline.metrics import job_metrics
from beamjobs.proto_json import as_json

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_AUTH = 1, 2, 3, 4
_EXIT_FOR_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_AUTH,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_AUTH,
}
_STATE_STYLE = {
    "DONE": "green",
    "RUNNING": "cyan",
    "STARTING": "cyan",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "CANCELLING": "yellow",
    "DRAINING": "yellow",
    "DRAINED": "yellow",
}
_IMPORTANCE_NAMES = [name.removeprefix("JOB_MESSAGE_").lower() for name in IMPORTANCES]


class Connection:
    """The channel to a Job API endpoint, with a proof of the user's AWS identity on every
    call when authenticating (as `beamjobs connect` adds one)."""

    def __init__(self, endpoint: str, *, tls: bool, authenticate: bool) -> None:
        self.endpoint = endpoint
        self._channel = (
            grpc.secure_channel(endpoint, grpc.ssl_channel_credentials())
            if tls
            else grpc.insecure_channel(endpoint)
        )
        self._identity: Any = None
        if authenticate:
            from beamjobs.cli.connect import Identity

            self._identity = Identity(endpoint)
        self.jobs = jobs_pb2_grpc.JobsStub(self._channel)
        self.job_api = job_api_pb2_grpc.JobServiceStub(self._channel)

    def metadata(self) -> list[tuple[str, str]]:
        if self._identity is None:
            return []
        from beamjobs.aws.signed_identity import METADATA_KEY

        return [(METADATA_KEY, self._identity.proof())]


# Characters that steer a terminal (C0 and C1 controls but newline and tab; bidirectional
# overrides and isolates, which reorder what is shown).
_STEERING = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def literal(text: str, style: str = "") -> Text:
    """Text that came from a job (names, messages, URNs), shown as it is: rich markup in it is
    not markup, and what would steer the terminal is shown escaped (ESC as \\u001b)."""
    return Text(_STEERING.sub(lambda found: f"\\u{ord(found.group()):04x}", text), style=style)


class Output:
    """Tables (with colour on a terminal) or JSON."""

    def __init__(self, format_: str | None) -> None:
        self.json = (format_ or ("table" if sys.stdout.isatty() else "json")) == "json"
        self.console = Console(highlight=False)

    def emit_json(self, value: Any) -> None:
        click.echo(json.dumps(value, indent=2, ensure_ascii=False))

    def table(self, *columns: str, title: str | Text | None = None) -> Table:
        return Table(*columns, title=title, title_justify="left", box=None, pad_edge=False)

    def print(self, *things: Any, soft_wrap: bool | None = None) -> None:
        self.console.print(*things, soft_wrap=soft_wrap)


def _connection_options(*, on_group: bool) -> Callable[[F], F]:
    """Where to connect and how to show it: taken by `beamjobs jobs` and by each of its
    commands (a command's own win), so they may come before or after the command's name."""
    options = [
        click.option(
            "--endpoint",
            envvar="BEAMJOBS_ENDPOINT" if on_group else None,
            default="localhost:8099" if on_group else None,
            show_default=on_group,
            help="the Job API's HOST:PORT",
        ),
        click.option(
            "--format",
            "format_",
            type=click.Choice(["table", "json"]),
            help="table on a terminal, JSON otherwise",
        ),
        click.option(
            "--tls/--plaintext",
            default=None,
            help="TLS to the endpoint (default: plaintext to this machine only, TLS elsewhere)",
        ),
        click.option(
            "--auth/--no-auth",
            default=None,
            help="prove your AWS identity on every call, as `beamjobs connect` does (default: "
            "everywhere but this machine)",
        ),
    ]

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@click.group()
@_connection_options(on_group=True)
@click.pass_context
def jobs(context: click.Context, **settings: Any) -> None:
    """See and steer jobs. JOB_ID: a job's id, a prefix of it no other job's id has, or a name
    no other job has."""
    context.obj = settings


def _connect(
    endpoint: str, format_: str | None, tls: bool | None, auth: bool | None
) -> tuple[Connection, Output]:
    from beamjobs.cli.connect import LOOPBACK_HOSTS

    remote = endpoint.rpartition(":")[0] not in LOOPBACK_HOSTS
    connection = Connection(
        endpoint,
        tls=remote if tls is None else tls,
        authenticate=remote if auth is None else auth,
    )
    return connection, Output(format_)


def _rpc(command: F) -> F:
    """Pass the connection and output; turn an RPC's failure into a message and an exit code."""

    @_connection_options(on_group=False)
    @functools.wraps(command)
    @click.pass_obj
    def run(group: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        settings = dict(group)
        for name in ("endpoint", "format_", "tls", "auth"):
            given = kwargs.pop(name)
            if given is not None:
                settings[name] = given
        try:
            connection, output = _connect(**settings)
            if "job_id" in kwargs:
                kwargs["job_id"] = _resolved(connection, kwargs["job_id"])
            return command(connection, output, *args, **kwargs)
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            click.echo(f"beamjobs: {code.name}: {error.details()}", err=True)  # type: ignore[attr-defined]
            sys.exit(_EXIT_FOR_STATUS.get(code, EXIT_FAILURE))
        except RuntimeError as error:  # no AWS credentials to authenticate with
            click.echo(f"beamjobs: {error}", err=True)
            sys.exit(EXIT_AUTH)

    return run  # type: ignore[return-value]


# A job's id: its name's slug, a dash, 32 hex digits (beamjobs.app.service.new_job_id).
_WHOLE_ID = re.compile(r".+-[0-9a-f]{32}")
# How many of the newest jobs a prefix or a name is looked for among.
_MOST_SEARCHED = 10_000


def _resolved(connection: Connection, reference: str) -> str:
    """The id of the job `reference` names: its whole id, a prefix of its id that no other
    job's has, or its name when no other job has it (among the newest _MOST_SEARCHED jobs).
    Exits 3 when none is named so, 2 when several are."""
    if _WHOLE_ID.fullmatch(reference):
        return reference
    by_id, by_name = [], []
    search = jobs_pb2.ListJobsRequest()
    for job in _listed(connection, search, _MOST_SEARCHED, 1000):
        if job.job_id.startswith(reference):
            by_id.append(job.job_id)
        if job.job_name == reference:
            by_name.append(job.job_id)
    found = by_id or by_name
    if len(found) == 1:
        return found[0]
    if not found:
        click.echo(
            f"beamjobs: NOT_FOUND: no job's id starts with {reference!r}, and no job is named so",
            err=True,
        )
        sys.exit(EXIT_NOT_FOUND)
    shown = ", ".join(found[:5]) + (", …" if len(found) > 5 else "")
    click.echo(
        f"beamjobs: {reference!r} names {len(found)} jobs ({shown}): give more of an id", err=True
    )
    sys.exit(EXIT_USAGE)


def _when(stamp: Any, present: bool = True) -> str:
    if not present:
        return "-"
    return stamp.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _state(state: int) -> str:
    name = job_api_pb2.JobState.Enum.Name(state)
    style = _STATE_STYLE.get(name)
    return f"[{style}]{name}[/]" if style else name


def _time_option(text: str | None) -> Any:
    """A time given as ISO 8601 (UTC unless it says otherwise), as a Timestamp."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    stamp = job_api_pb2.JobStateEvent().timestamp
    stamp.FromDatetime(moment)
    return stamp


@jobs.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in JobState], case_sensitive=False),
    help="jobs in this state (repeatable: any of them)",
)
@click.option("--name", "name_prefix", default="", help="jobs whose name starts with this")
@click.option("--created-after", help="jobs created at or after this time (ISO 8601)")
@click.option("--created-before", help="jobs created before this time (ISO 8601)")
@click.option("--owner", default="", help="an owner's jobs (admins only)")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="at most this many jobs (0: every one)",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="jobs asked for per call",
)
@_rpc
def list_jobs(
    connection: Connection,
    output: Output,
    states: tuple[str, ...],
    name_prefix: str,
    created_after: str | None,
    created_before: str | None,
    owner: str,
    limit: int,
    page_size: int,
) -> None:
    """List jobs, newest first."""
    request = jobs_pb2.ListJobsRequest(
        states=[job_api_pb2.JobState.Enum.Value(s.upper()) for s in states],
        name_prefix=name_prefix,
        created_after=_time_option(created_after),
        created_before=_time_option(created_before),
        owner=owner,
    )
    listed = list(_listed(connection, request, limit, page_size))
    if output.json:
        output.emit_json([as_json(job) for job in listed])
        return
    rows: list[dict[str, Text | str]] = [
        {
            "JOB ID": literal(job.job_id),
            "NAME": literal(job.job_name),
            "STATE": _state(job.state),
            "CREATED": _when(job.created_at),
            "DURATION": _ran(job),
            "OWNER": literal(job.owner),
            "ENGINE": literal(job.engine),
            "FAILURE": literal(job.failure),
        }
        for job in listed
    ]
    columns = _fitting(output.console.width, rows)
    table = output.table()
    for column in columns:
        # An id is never cut: the other columns wrap first, however narrow the terminal.
        table.add_column(column, no_wrap=column == "JOB ID", overflow="fold")
    for row in rows:
        table.add_row(*(row[column] for column in columns))
    output.print(table)


# The list's columns a narrow terminal leaves out, first to last.
_DROPPED_FIRST = ("FAILURE", "ENGINE", "OWNER", "CREATED")


def _fitting(width: int, rows: list[dict[str, Text | str]]) -> list[str]:
    """The list's columns that fit `width` whole (two spaces between columns), leaving out
    _DROPPED_FIRST's as needed; the others are kept however narrow. FAILURE only when a job
    listed failed, and it may wrap to fit."""
    columns = ["JOB ID", "NAME", "STATE", "CREATED", "DURATION", "OWNER", "ENGINE"]
    if any(str(row["FAILURE"]) for row in rows):
        columns.append("FAILURE")

    def needed(column: str) -> int:
        cells = (
            Text.from_markup(c) if isinstance(c, str) else c for c in (r[column] for r in rows)
        )
        return max([len(column), *(cell.cell_len for cell in cells)])

    for dropped in _DROPPED_FIRST:
        # A failure wraps: twenty columns of it are as good as whole.
        widths = [min(needed(c), 20) if c == "FAILURE" else needed(c) for c in columns]
        if sum(widths) + 2 * (len(columns) - 1) <= width:
            break
        if dropped in columns:
            columns.remove(dropped)
    return columns


def _listed(
    connection: Connection, request: Any, limit: int, page_size: int
) -> Iterator[jobs_pb2.JobSummary]:
    """The jobs `request` lists, page after page, `limit` at most (0: all)."""
    count = 0
    while True:
        request.page_size = page_size if not limit else min(page_size, limit - count)
        page = connection.jobs.ListJobs(request, metadata=connection.metadata())
        for job in page.jobs:
            yield job
            count += 1
        if not page.next_page_token or (limit and count >= limit):
            return
        request.page_token = page.next_page_token


@jobs.command()
@click.argument("job_id")
@_rpc
def describe(connection: Connection, output: Output, job_id: str) -> None:
    """Show a job: its times, history, environments, artifacts and worker."""
    detail = connection.jobs.GetJob(
        jobs_pb2.GetJobRequest(job_id=job_id), metadata=connection.metadata()
    )
    if output.json:
        output.emit_json(as_json(detail))
        return
    job = detail.summary
    # The id on a line of its own: a table's title would wrap it to the table's width.
    output.print(literal(f"Job {job.job_id}", style="bold"), soft_wrap=True)
    facts = output.table("", "")
    for name, value in (
        ("name", literal(job.job_name)),
        ("state", _state(job.state)),
        ("owner", literal(job.owner)),
        (
            "engine",
            literal(
                f"{job.engine} (job {job.upstream_job_id})" if job.upstream_job_id else job.engine
            ),
        ),
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at, job.HasField("started_at"))),
        ("ended", _when(job.ended_at, job.HasField("ended_at"))),
        ("ran for", _duration(detail)),
        ("worker", f"{detail.worker.vcpu:g} vCPU, {detail.worker.memory_mb} MiB"),
        ("bounded", "yes" if detail.bounded else "no (streaming)"),
        *((("failure", literal(detail.failure, style="red")),) if detail.failure else ()),
        *((("failed in", literal(detail.failed_step)),) if detail.failed_step else ()),
    ):
        facts.add_row(f"[bold]{name}[/]", value)
    output.print(facts)
    history = output.table("STATE", "SINCE", title="\nHistory")
    for event in detail.history:
        history.add_row(_state(event.state), _when(event.timestamp))
    output.print(history)
    environments = output.table("ENVIRONMENT", "URN", "IMAGE", title="\nEnvironments")
    for env in detail.environments:
        environments.add_row(literal(env.id), literal(env.urn), literal(env.container_image or "-"))
    output.print(environments)
    if detail.artifacts:
        artifacts = output.table("ARTIFACT", "ENVIRONMENT", "SHA256", "STAGED", title="\nArtifacts")
        for artifact in detail.artifacts:
            artifacts.add_row(
                literal(artifact.staged_name),
                literal(artifact.environment_id),
                artifact.sha256[:16],
                "yes" if artifact.staged else "[red]no[/]",
            )
        output.print(artifacts)


def _duration(detail: Any) -> str:
    if not detail.HasField("run_duration"):
        return "-"
    return _seconds(detail.run_duration.ToTimedelta().total_seconds())


def _ran(job: jobs_pb2.JobSummary) -> str:
    """How long a listed job has run: from its start to its end, or to now."""
    if not job.HasField("started_at"):
        return "-"
    end = job.ended_at.ToDatetime(UTC) if job.HasField("ended_at") else datetime.now(UTC)
    return _seconds((end - job.started_at.ToDatetime(UTC)).total_seconds())


def _seconds(seconds: float) -> str:
    minutes, seconds = divmod(max(seconds, 0.0), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}h{minutes:02d}m{seconds:04.1f}s" if hours else f"{minutes}m{seconds:04.1f}s"


@jobs.command()
@click.argument("job_id")
@_rpc
def cancel(connection: Connection, output: Output, job_id: str) -> None:
    """Cancel a job."""
    _steer(connection, output, "Cancel", job_api_pb2.CancelJobRequest(job_id=job_id))


@jobs.command()
@click.argument("job_id")
@_rpc
def drain(connection: Connection, output: Output, job_id: str) -> None:
    """Drain a streaming job: stop reading, finish what is in flight."""
    _steer(connection, output, "Drain", job_api_pb2.DrainJobRequest(job_id=job_id))


def _steer(connection: Connection, output: Output, verb: str, request: Any) -> None:
    """Cancel or Drain, and say the state the job is in after it."""
    state = getattr(connection.job_api, verb)(request, metadata=connection.metadata()).state
    if output.json:
        output.emit_json({"job_id": request.job_id, "state": job_api_pb2.JobState.Enum.Name(state)})
    else:
        output.print(f"{request.job_id}: {_state(state)}")


@jobs.command()
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="follow the job's messages until it ends")
@click.option(
    "--importance",
    type=click.Choice(_IMPORTANCE_NAMES, case_sensitive=False),
    help="messages of at least this importance",
)
@_rpc
def logs(
    connection: Connection, output: Output, job_id: str, follow: bool, importance: str | None
) -> None:
    """Print a job's messages (one JSON object a line, in JSON)."""
    minimum = f"JOB_MESSAGE_{importance.upper()}" if importance else ""
    messages = _followed(connection, job_id) if follow else _stored(connection, job_id, minimum)
    for message in messages:
        name = job_api_pb2.JobMessage.MessageImportance.Name(message.importance)
        if minimum and IMPORTANCES.index(name) < IMPORTANCES.index(minimum):
            continue
        if output.json:
            click.echo(json.dumps(as_json(message), ensure_ascii=False))
        else:
            level = name.removeprefix("JOB_MESSAGE_")
            style = {"ERROR": "red", "WARNING": "yellow", "DEBUG": "dim"}.get(level, "")
            output.console.print(
                Text.assemble(
                    f"{message.time} ", (f"{level:<8}", style), " ", literal(message.message_text)
                ),
                highlight=False,
            )


def _stored(connection: Connection, job_id: str, minimum: str) -> Iterable[Any]:
    """The messages stored so far, page after page."""
    request = jobs_pb2.ListMessagesRequest(
        job_id=job_id,
        minimum_importance=job_api_pb2.JobMessage.MessageImportance.Value(
            minimum or "MESSAGE_IMPORTANCE_UNSPECIFIED"
        ),
    )
    while True:
        page = connection.jobs.ListMessages(request, metadata=connection.metadata())
        yield from page.messages
        if page.next_page_token == request.page_token:  # no event since: all read
            return
        request.page_token = page.next_page_token


def _followed(connection: Connection, job_id: str) -> Iterable[Any]:
    """Every message, as Beam's message stream replays them and follows the job to its end."""
    stream = connection.job_api.GetMessageStream(
        job_api_pb2.JobMessagesRequest(job_id=job_id), metadata=connection.metadata()
    )
    for response in stream:
        if response.HasField("message_response"):
            yield response.message_response


@jobs.command()
@click.argument("job_id")
@_rpc
def metrics(connection: Connection, output: Output, job_id: str) -> None:
    """A job's counters, distributions, gauges and element counts."""
    answer = connection.job_api.GetJobMetrics(
        job_api_pb2.GetJobMetricsRequest(job_id=job_id), metadata=connection.metadata()
    )
    pipeline = connection.job_api.GetPipeline(
        job_api_pb2.GetJobPipelineRequest(job_id=job_id), metadata=connection.metadata()
    )
    names = pcollection_names(pipeline_pb2.Pipeline.FromString(pipeline.pipeline))
    decoded = job_metrics(answer.metrics, names)
    if output.json:
        output.emit_json([asdict(metric) for metric in decoded])
        return
    table = output.table("KIND", "STEP", "PCOLLECTION", "NAME", "ATTEMPTED", "COMMITTED")
    for metric in decoded:
        table.add_row(
            metric.kind,
            literal(metric.step or "-"),
            literal(metric.pcollection_name or metric.pcollection or "-"),
            literal(f"{metric.namespace}:{metric.name}" if metric.name else "-"),
            _value(metric.attempted),
            _value(metric.committed),
        )
    output.print(table)


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and "count" in value:
        return f"n={value['count']} sum={value['sum']} min={value['min']} max={value['max']}"
    if isinstance(value, dict):
        return str(value["value"])
    return f"{value:g}" if isinstance(value, float) else str(value)


@jobs.command()
@click.argument("job_id")
@_rpc
def graph(connection: Connection, output: Output, job_id: str) -> None:
    """A job's pipeline graph: its transforms, and the PCollections between them."""
    answer = connection.job_api.GetPipeline(
        job_api_pb2.GetJobPipelineRequest(job_id=job_id), metadata=connection.metadata()
    )
    drawn = pipeline_graph(pipeline_pb2.Pipeline.FromString(answer.pipeline))
    if output.json:
        output.emit_json(asdict(drawn))
        return
    names = {node.transform_id: node.name for node in drawn.nodes}
    table = output.table("TRANSFORM", "READS", "URN")
    for node in drawn.nodes:
        inputs = [
            f"{edge.pcollection} ← {names[edge.source]}"
            for edge in drawn.edges
            if edge.target == node.transform_id
        ]
        table.add_row(
            literal(node.name, "bold"), literal("\n".join(inputs) or "-"), literal(node.urn)
        )
    output.print(table)
