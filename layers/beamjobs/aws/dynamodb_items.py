"""How a job is kept in the table's items: each attribute declared once, with how it is written
from the job and read back into it (beamjobs.aws.dynamodb_store owns the keys and the writes).

A job's record holds what never changes and a projection of its snapshot; every event item
holds the snapshot after it, under the same names prefixed with ``job_``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from beamjobs.domain import poison
from beamjobs.domain.model import Change, Event, Job, Message, Staged, StagingLease, Upstream
from beamjobs.domain.states import JobState

# The prefix of the snapshot's attributes on an event item.
SNAPSHOT_PREFIX = "job_"
# The record's reference to the job's metrics, set by their publisher, not at creation.
METRICS_REF = "metrics_ref"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB's typed form of `values` (None: the attribute is absent)."""
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def decimal(value: float) -> Decimal:
    """A time as stored: to the microsecond."""
    return Decimal(repr(round(value, 6)))


class Stored:
    """The attributes of one item as read, under an optional prefix."""

    def __init__(self, values: dict[str, Any], prefix: str = "") -> None:
        self._values = values
        self._prefix = prefix

    def required(self, name: str) -> Any:
        return self._values[self._prefix + name]  # KeyError: a malformed item

    def optional(self, name: str) -> Any:
        return self._values.get(self._prefix + name)


@dataclass(frozen=True)
class _Part:
    """One field of a job: the attributes it is stored as, and how it is read back."""

    field: str
    write: Callable[[Job], dict[str, Any]]
    read: Callable[[Stored], Any]


def _as_is(field: str, *, required: bool = False) -> _Part:
    """A field stored as it is, under its own name (None: absent)."""
    return _Part(
        field,
        lambda j: {field: getattr(j, field)},
        (lambda s: s.required(field)) if required else (lambda s: s.optional(field)),
    )


def _optional_time(value: Any) -> float | None:
    return None if value is None else float(value)


def _lease(stored: Stored) -> StagingLease | None:
    session = stored.optional("staging_session")
    return (
        None
        if session is None
        else StagingLease(str(session), float(stored.optional("staging_until")))
    )


def _upstream(stored: Stored) -> Upstream | None:
    job_id = stored.optional("upstream_job_id")
    return (
        None
        if job_id is None
        else Upstream(str(job_id), str(stored.optional("upstream_cursor") or ""))
    )


# The part of a job its events change: on the record (projected) and on every event item.
_SNAPSHOT = (
    _Part("state", lambda j: {"state": j.state.value}, lambda s: JobState(s.required("state"))),
    _Part(
        "state_time",
        lambda j: {"state_time": decimal(j.state_time)},
        lambda s: float(s.required("state_time")),
    ),
    _Part(
        "pipeline_ref",
        lambda j: {"pipeline_ref": j.pipeline_ref},
        lambda s: str(s.required("pipeline_ref")),
    ),
    _Part(
        "unstaged",
        lambda j: {"unstaged": list(j.unstaged) or None},
        lambda s: tuple(s.optional("unstaged") or ()),
    ),
    _Part(
        "artifacts",
        lambda j: {"artifacts": list(j.artifacts) or None},
        lambda s: tuple(s.optional("artifacts") or ()),
    ),
    _Part(
        "artifact_bytes",
        lambda j: {"artifact_bytes": j.artifact_bytes or None},
        lambda s: int(s.optional("artifact_bytes") or 0),
    ),
    _Part(
        "started_at",
        lambda j: {"started_at": None if j.started_at is None else decimal(j.started_at)},
        lambda s: _optional_time(s.optional("started_at")),
    ),
    _Part(
        "staging_lease",
        lambda j: {
            "staging_session": j.staging_lease.session if j.staging_lease else None,
            "staging_until": decimal(j.staging_lease.until) if j.staging_lease else None,
        },
        _lease,
    ),
    _Part(
        "staging_spent",
        lambda j: {"staging_spent": j.staging_spent or None},
        lambda s: bool(s.optional("staging_spent")),
    ),
    _Part(
        "upstream",
        lambda j: {
            "upstream_job_id": j.upstream.job_id if j.upstream else None,
            "upstream_cursor": j.upstream.cursor if j.upstream else None,
        },
        _upstream,
    ),
    _as_is("failure"),
)

# What never changes, on the record alone.
_FIXED = (
    _as_is("job_id", required=True),
    _as_is("job_name", required=True),
    _as_is("owner"),
    _as_is("staging_token_sha256"),
    _as_is("worker_secret_sha256"),
    _Part(
        "created_at",
        lambda j: {"created_at": decimal(j.created_at)},
        lambda s: float(s.required("created_at")),
    ),
    _as_is("options_ref", required=True),
    _as_is("options_json"),
    _Part(
        "bounded",
        lambda j: {"bounded": j.bounded},
        lambda s: bool(True if s.optional("bounded") is None else s.optional("bounded")),
    ),
    _Part(
        "environment_urns",
        lambda j: {"environment_urns": list(j.environment_urns)},
        lambda s: tuple(s.optional("environment_urns") or ()),
    ),
    _Part(
        "engine", lambda j: {"engine": j.engine or None}, lambda s: str(s.optional("engine") or "")
    ),
    _Part("metrics_ref", lambda j: {}, lambda s: s.optional(METRICS_REF)),
    _Part("seq", lambda j: {"seq": j.seq}, lambda s: int(s.required("seq"))),
)


# What only the job's writers need: on every event item, never on the record (a change of it
# alone is not projected).
_CARRIED = (_as_is("last_report"),)


def snapshot(job: Job) -> dict[str, Any]:
    """The part of a job its events change, as stored (None: absent)."""
    return {name: value for part in _SNAPSHOT for name, value in part.write(job).items()}


def record(job: Job) -> dict[str, Any]:
    """A new job's record, without its keys: what never changes, and its snapshot."""
    return {
        **{name: value for part in _FIXED for name, value in part.write(job).items()},
        **snapshot(job),
    }


def job_from_record(values: dict[str, Any]) -> Job:
    """The job a record holds; MalformedItem when it does not hold one."""
    stored = Stored(values)
    try:
        return Job(**{part.field: part.read(stored) for part in (*_FIXED, *_SNAPSHOT)})
    except poison.DECODING_ERRORS as error:
        raise poison.malformed(item_key(values), error) from error


def with_snapshot(job: Job, event: dict[str, Any]) -> Job:
    """The job with the snapshot an event item recorded, as of that event."""
    stored = Stored(event, SNAPSHOT_PREFIX)
    try:
        return replace(
            job,
            seq=int(event["seq"]),
            **{part.field: part.read(stored) for part in (*_SNAPSHOT, *_CARRIED)},
        )
    except poison.DECODING_ERRORS as error:
        raise poison.malformed(item_key(event), error) from error


def event_attributes(change: Change, after: Job, at: float) -> dict[str, Any]:
    """An event item, without its keys: the change, and the job's snapshot after it."""
    item: dict[str, Any] = {
        "seq": after.seq,
        "time": decimal(at),
        **{SNAPSHOT_PREFIX + name: value for name, value in snapshot(after).items()},
        **{
            SNAPSHOT_PREFIX + name: value
            for part in _CARRIED
            for name, value in part.write(after).items()
        },
    }
    if change.state is not None:
        item["state"] = change.state.value
    if change.messages:
        item["messages"] = [
            {"importance": m.importance, "text": m.text, "time": decimal(m.time)}
            for m in change.messages
        ]
    if change.staged is not None:
        item["staged_pipeline_ref"] = change.staged.pipeline_ref
        item["staged_unstaged"] = list(change.staged.unstaged)
        item["staged_artifacts"] = list(change.staged.artifacts)
        item["staged_artifact_bytes"] = change.staged.artifact_bytes
    return item


def event_from_item(values: dict[str, Any]) -> Event:
    """The event an event item holds; MalformedItem when it does not hold one."""
    try:
        return _read_event(values)
    except poison.DECODING_ERRORS as error:
        raise poison.malformed(item_key(values), error) from error


def item_key(values: dict[str, Any]) -> str:
    """An item's key, as a malformed item is reported by (bounded)."""
    return f"{str(values.get('pk'))[:300]!r}/{str(values.get('sk'))[:100]!r}"


def _read_event(values: dict[str, Any]) -> Event:
    state = values.get("state")
    staged = values.get("staged_pipeline_ref")
    return Event(
        seq=int(values["seq"]),
        time=float(values["time"]),
        state=JobState(state) if state else None,
        messages=tuple(
            Message(m["importance"], m["text"], float(m["time"]))
            for m in values.get("messages", [])
        ),
        staged=(
            Staged(
                str(staged),
                tuple(values.get("staged_unstaged") or ()),
                tuple(values.get("staged_artifacts") or ()),
                int(values.get("staged_artifact_bytes") or 0),
            )
            if staged is not None
            else None
        ),
    )
