"""A job's records: the job, its events and messages, and the bounds they are stored within.

A job is an append-only log of events. An event adds messages, a new state, or a staging
session's outcome, and records the job's snapshot after it (its state and since when, its
pipeline, what is unstaged, when it started): so the log's tail alone says where the job is.
Bounds are in UTF-8 bytes, as stored, and are this module's: what one event may hold, what one
page of events may hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from beamjobs.domain.errors import NotFound
from beamjobs.domain.failures import failure_of
from beamjobs.domain.states import JobState

# DynamoDB items are at most 400 KB, measured in UTF-8 bytes as stored: a message longer than
# this is cut (and says so), and one event holds at most MAX_EVENT_MESSAGE_BYTES of text.
MAX_MESSAGE_BYTES = 100_000
MAX_EVENT_MESSAGE_BYTES = 300_000
# A page of events read for a stream holds about this many bytes of messages (DynamoDB answers
# a Query in pages of at most 1 MB): a catch-up costs one page of memory, not a job's history.
EVENT_PAGE_BYTES = 1024 * 1024
# Jobs that have started and not ended.
ACTIVE_STATES = frozenset(
    {JobState.STARTING, JobState.RUNNING, JobState.CANCELLING, JobState.DRAINING}
)


# Beam's message importances (JobMessage.MessageImportance), least important first.
IMPORTANCES = (
    "JOB_MESSAGE_DEBUG",
    "JOB_MESSAGE_DETAILED",
    "JOB_MESSAGE_BASIC",
    "JOB_MESSAGE_WARNING",
    "JOB_MESSAGE_ERROR",
)


@dataclass(frozen=True)
class Message:
    """A job message; importance is Beam's name (JOB_MESSAGE_*)."""

    importance: str
    text: str
    time: float

    def at_least(self, importance: str) -> bool:
        """Whether the message is at least as important as `importance` (one of IMPORTANCES,
        or "" for any)."""
        if not importance or self.importance not in IMPORTANCES:
            return True
        return IMPORTANCES.index(self.importance) >= IMPORTANCES.index(importance)


def message_id(seq: int, index: int) -> str:
    """A message's id: its event's sequence number and its place in the event (unique, and in
    the job's order)."""
    return f"{seq}.{index}"


@dataclass(frozen=True)
class Staged:
    """A staging session's outcome: the pipeline with its staged references, and the
    artifacts still unstaged (none once the session completed)."""

    pipeline_ref: str
    unstaged: tuple[str, ...]
    # The sha256 of each artifact staged (what the job's worker may read).
    artifacts: tuple[str, ...] = ()
    # Bytes received for the job's artifacts, in this session and every one before it.
    artifact_bytes: int = 0


@dataclass(frozen=True)
class StagingLease:
    """A staging session's exclusive hold on its preparation's staging token, until `until`."""

    session: str
    until: float


@dataclass(frozen=True)
class Upstream:
    """Where a job that runs on an upstream engine is there (beamjobs.upstream.mirror): the
    upstream's job id, and the id of the last upstream message mirrored into the job's log ("" for
    none). It moves in the same event as the messages it counts, so a mirror that resumes after a
    crash mirrors every message once."""

    job_id: str
    cursor: str = ""


def _numbered(message_id: str) -> tuple[int, ...] | None:
    parts = message_id.split(".")
    if not all(part.isdigit() and len(part) <= 18 for part in parts):
        return None
    return tuple(int(part) for part in parts)


def is_after(message_id: str, cursor: str) -> bool:
    """Whether an upstream message comes after the cursor (the last one mirrored). Beam's job
    servers number their messages (the reference server "1", "2", …; Beamjobs
    "<seq>.<index>"), and numbers say which came first; a message whose id is not a number
    cannot be placed, and counts as new unless it is the cursor itself."""
    if not cursor:
        return True
    mine, last = _numbered(message_id), _numbered(cursor)
    if mine is None or last is None:
        return message_id != cursor
    return mine > last


@dataclass(frozen=True)
class Change:
    """What one event adds to a job: messages, then a new state; or a staging outcome; or a
    staging session's lease; and, for a mirrored job, where its upstream job is."""

    state: JobState | None = None
    messages: tuple[Message, ...] = ()
    staged: Staged | None = None
    lease: StagingLease | None = None
    upstream: Upstream | None = None
    # The worker's report that makes it (see Job.last_report).
    report: str | None = None


@dataclass(frozen=True)
class Event:
    """One stored event of a job."""

    seq: int
    time: float
    state: JobState | None = None
    messages: tuple[Message, ...] = ()
    staged: Staged | None = None


@dataclass(frozen=True)
class Job:
    job_id: str
    job_name: str
    state: JobState
    state_time: float
    # The sequence number of the job's last event.
    seq: int
    created_at: float
    pipeline_ref: str
    options_ref: str
    # Pipeline options as Beam's Struct in JSON form; None when too large for the record (the
    # blob at options_ref always has them).
    options_json: str | None = None
    bounded: bool = True
    environment_urns: tuple[str, ...] = ()
    metrics_ref: str | None = None
    # Artifacts the pipeline depends on that were not staged yet: a job runs only without any.
    unstaged: tuple[str, ...] = ()
    # When the job was started (Run): set once, and never for a job cancelled before it ran.
    started_at: float | None = None
    # The principal who prepared it (beamjobs.domain.identity); None for jobs older than owners.
    owner: str | None = None
    # The sha256 of the staging token's secret, which only the preparer was given.
    staging_token_sha256: str | None = None
    # The staging session holding the token now, if any; and whether a session completed
    # (the token is then spent).
    staging_lease: StagingLease | None = None
    staging_spent: bool = False
    # The sha256 of what the job's worker, and nothing else, reports with (the secret itself is
    # kept apart for the worker alone: beamjobs.app.worker_channel); and the sha256 of each
    # staged artifact of its pipeline, the ones its worker may read.
    worker_secret_sha256: str | None = None
    artifacts: tuple[str, ...] = ()
    # Bytes received for its artifacts in all its staging sessions (against its owner's
    # artifact quota, which a session that ends early and stages again does not renew).
    artifact_bytes: int = 0
    # The engine it runs on (beamjobs.domain.engines); "" for jobs older than engines.
    engine: str = ""
    # On an upstream engine: its job there, once the mirror prepared it.
    upstream: Upstream | None = None
    # Why it failed, at a glance (beamjobs.domain.failures): from the error its FAILED event
    # holds, for lists; None for any other state.
    failure: str | None = None
    # The last report of its worker that appended an event (its Claim's request id; a Say's,
    # with the batch: "<request id>/<batch>"), carried by every event after it: a report sent
    # again (its answer lost) finds itself here and is not applied twice. Never projected.
    last_report: str | None = None

    def after(self, change: Change, seq: int, at: float) -> Job:
        """The job once `change` is its event `seq`, written at `at`."""
        job = replace(self, seq=seq)
        if change.lease is not None:
            job = replace(job, staging_lease=change.lease)
        if change.staged is not None:
            # A session's outcome ends its lease; a complete one spends the token.
            job = replace(
                job,
                pipeline_ref=change.staged.pipeline_ref,
                unstaged=change.staged.unstaged,
                artifacts=change.staged.artifacts,
                artifact_bytes=max(job.artifact_bytes, change.staged.artifact_bytes),
                staging_lease=None,
                staging_spent=not change.staged.unstaged,
            )
        if change.upstream is not None:
            job = replace(job, upstream=change.upstream)
        if change.report is not None:
            job = replace(job, last_report=change.report)
        if change.state is not None:
            job = replace(job, state=change.state, state_time=at)
            if change.state is JobState.STARTING:
                job = replace(job, started_at=at)
            if change.state is JobState.FAILED:
                errors = [m.text for m in change.messages if m.importance == "JOB_MESSAGE_ERROR"]
                job = replace(job, failure=failure_of(errors[-1]).summary if errors else None)
        return job


def unknown_job(job_id: str) -> NotFound:
    return NotFound(f"job {job_id!r} does not exist")


def job_to_json(job: Job) -> str:
    """The job as one line of JSON (a started job handed to a local worker)."""
    return json.dumps({**asdict(job), "state": job.state.value})


def job_from_json(text: str) -> Job:
    values = json.loads(text)
    lease = values.get("staging_lease")
    upstream = values.get("upstream")
    return Job(
        **{
            **values,
            "state": JobState(values["state"]),
            "environment_urns": tuple(values["environment_urns"]),
            "unstaged": tuple(values["unstaged"]),
            "artifacts": tuple(values.get("artifacts", ())),
            "staging_lease": StagingLease(**lease) if lease else None,
            "upstream": Upstream(**upstream) if upstream else None,
        }
    )


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _cut(message: Message) -> Message:
    size = utf8_size(message.text)
    if size <= MAX_MESSAGE_BYTES:
        return message
    # Cut at a byte bound (dropping a character the bound splits) that leaves room for the
    # note, so a cut message is within the bound and is never cut again.
    note = f"\n… [cut: {size} bytes in all]"
    room = MAX_MESSAGE_BYTES - utf8_size(note)
    kept = message.text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
    return Message(message.importance, kept + note, message.time)


def message_batches(messages: Sequence[Message]) -> list[tuple[Message, ...]]:
    """The messages, cut to size, in the batches that each fit one event."""
    batches: list[list[Message]] = []
    size = MAX_EVENT_MESSAGE_BYTES
    for message in map(_cut, messages):
        length = utf8_size(message.text)
        if size + length > MAX_EVENT_MESSAGE_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(message)
        size += length
    return [tuple(batch) for batch in batches]


def identified_batches(
    messages: Sequence[tuple[str, Message]],
) -> list[tuple[tuple[str, Message], ...]]:
    """Messages with ids (upstream ones), cut to size, in the batches that each fit one event,
    each message keeping its id."""
    ids = iter([message_id for message_id, _ in messages])
    return [
        tuple((next(ids), message) for message in batch)
        for batch in message_batches([message for _, message in messages])
    ]


def event_bytes(event: Event) -> int:
    """An event's size as a page counts it: its messages' text."""
    return sum(utf8_size(m.text) for m in event.messages)
