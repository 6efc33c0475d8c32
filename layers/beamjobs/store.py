"""The job store: the one data-access class over the DynamoDB table (single-table design).

Items of a job, all under the partition key ``job#<id>``:

- ``sk = "job"``: the job record (name, state, ``seq``, timestamps, blob references, labels).
- ``sk = "ev#<seq, zero-padded>"``: one item per state change and per message. ``seq`` is the
  job's event counter: each event takes the next number in the same transaction that advances
  the record's counter (conditional on its old value), so replay is one Query and ordering is
  total and gap-free.

Listing uses the ``gsi1`` index (``gsi1pk = "jobs"``, ``gsi1sk = <created>#<id>``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from beamjobs.aws import aws_errors
from beamjobs.errors import Conflict, FailedPrecondition, NotFound
from beamjobs.states import JobState, can_transition, is_terminal

JOB_SK = "job"
EVENT_PREFIX = "ev#"
LIST_INDEX = "gsi1"
LIST_PARTITION = "jobs"
# Conditional writes lose races only to other writers of the same job; a handful of retries
# always settles (each retry re-reads and re-decides).
_MAX_RACE_RETRIES = 20
# DynamoDB items are at most 400 KB; a message longer than this is cut (and says so).
MAX_MESSAGE_CHARS = 100_000
# TransactWriteItems takes at most 100 items; one is the job record.
_EVENTS_PER_TRANSACTION = 50

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def _decimal(value: float) -> Decimal:
    return Decimal(repr(round(value, 6)))


def job_key(job_id: str) -> dict[str, Any]:
    return _to_item({"pk": f"job#{job_id}", "sk": JOB_SK})


@dataclass(frozen=True)
class Job:
    job_id: str
    job_name: str
    state: JobState
    state_time: float
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

    @classmethod
    def from_item(cls, values: dict[str, Any]) -> Job:
        return cls(
            job_id=values["job_id"],
            job_name=values["job_name"],
            state=JobState(values["state"]),
            state_time=float(values["state_time"]),
            seq=int(values["seq"]),
            created_at=float(values["created_at"]),
            pipeline_ref=values["pipeline_ref"],
            options_ref=values["options_ref"],
            options_json=values.get("options_json"),
            bounded=bool(values.get("bounded", True)),
            environment_urns=tuple(values.get("environment_urns") or ()),
            metrics_ref=values.get("metrics_ref"),
        )


@dataclass(frozen=True)
class Message:
    """A job message as the worker reports it; importance is Beam's name (JOB_MESSAGE_*)."""

    importance: str
    text: str
    time: float


@dataclass(frozen=True)
class Event:
    """One stored event of a job: a state change or a message."""

    seq: int
    time: float
    state: JobState | None = None
    importance: str | None = None
    text: str | None = None

    @property
    def is_state(self) -> bool:
        return self.state is not None


class JobStore:
    """Jobs, their state history and their messages in one DynamoDB table."""

    def __init__(
        self,
        dynamodb: Any,
        table_name: str,
        *,
        retention_days: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = dynamodb
        self._table = table_name
        self._retention_seconds = retention_days * 86_400
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    # -- jobs ---------------------------------------------------------------------------------

    def create(self, job: Job) -> None:
        """Record a new job in STOPPED with its first state event. Fails with Conflict when
        the id exists."""
        expires_at = int(job.created_at + self._retention_seconds)
        record = {
            "pk": f"job#{job.job_id}",
            "sk": JOB_SK,
            "job_id": job.job_id,
            "job_name": job.job_name,
            "state": job.state.value,
            "state_time": _decimal(job.state_time),
            "seq": 1,
            "created_at": _decimal(job.created_at),
            "pipeline_ref": job.pipeline_ref,
            "options_ref": job.options_ref,
            "options_json": job.options_json,
            "bounded": job.bounded,
            "environment_urns": list(job.environment_urns),
            "gsi1pk": LIST_PARTITION,
            "gsi1sk": f"{job.created_at:017.6f}#{job.job_id}",
            "expires_at": expires_at,
        }
        first_event = self._event_item(
            job.job_id, 1, job.state_time, {"state": job.state.value}, expires_at
        )
        with aws_errors(f"job {job.job_id}"):
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": _to_item(record),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {"Put": {"TableName": self._table, "Item": first_event}},
                ]
            )

    def get(self, job_id: str, *, consistent: bool = True) -> Job:
        with aws_errors(f"job {job_id}"):
            response = self._db.get_item(
                TableName=self._table, Key=job_key(job_id), ConsistentRead=consistent
            )
        if "Item" not in response:
            raise NotFound(f"job {job_id!r} does not exist")
        return Job.from_item(_from_item(response["Item"]))

    def list(self, *, page_size: int = 100) -> list[Job]:
        """Every job, oldest first."""
        jobs: list[Job] = []
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": LIST_INDEX,
            "KeyConditionExpression": "gsi1pk = :p",
            "ExpressionAttributeValues": _to_item({":p": LIST_PARTITION}),
            "Limit": page_size,
        }
        while True:
            with aws_errors("job list"):
                page = self._db.query(**query)
            jobs.extend(Job.from_item(_from_item(item)) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return jobs
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def set_metrics_ref(self, job_id: str, metrics_ref: str) -> None:
        with aws_errors(f"job {job_id}"):
            self._db.update_item(
                TableName=self._table,
                Key=job_key(job_id),
                UpdateExpression="SET metrics_ref = :m",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=_to_item({":m": metrics_ref}),
            )

    # -- state and messages -------------------------------------------------------------------

    def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        only_from: Iterable[JobState] | None = None,
        messages: Sequence[Message] = (),
    ) -> Job:
        """Move a job to `to`, recording the state event (and `messages` just before it) in the
        same transaction. Raises FailedPrecondition when the job's current state forbids it
        (or is not in `only_from`); the error names the current state."""
        allowed_from = frozenset(only_from) if only_from is not None else None
        for _ in range(_MAX_RACE_RETRIES):
            job = self.get(job_id)
            if not can_transition(job.state, to) or (
                allowed_from is not None and job.state not in allowed_from
            ):
                raise TransitionRejected(job, to)
            now = self._clock()
            events = [self._message_values(m) for m in messages] + [{"state": to.value}]
            try:
                self._append(job, events, now, new_state=to)
            except Conflict:
                continue
            return self.get(job_id)
        raise Conflict(f"job {job_id}: too many concurrent writers")

    def append_messages(self, job_id: str, messages: Sequence[Message]) -> None:
        """Append messages in order, whatever the job's state."""
        pending = [self._message_values(m) for m in messages]
        while pending:
            chunk = pending[:_EVENTS_PER_TRANSACTION]
            for _ in range(_MAX_RACE_RETRIES):
                job = self.get(job_id)
                try:
                    self._append(job, chunk, self._clock(), new_state=None)
                    break
                except Conflict:
                    continue
            else:
                raise Conflict(f"job {job_id}: too many concurrent writers")
            pending = pending[_EVENTS_PER_TRANSACTION:]

    def events(self, job_id: str, *, after_seq: int = 0, limit: int = 500) -> list[Event]:
        """Stored events with a sequence number above `after_seq`, in order."""
        events: list[Event] = []
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": _to_item(
                {
                    ":pk": f"job#{job_id}",
                    ":lo": _event_sk(after_seq + 1),
                    ":hi": EVENT_PREFIX + "~",
                }
            ),
            "ConsistentRead": True,
            "Limit": limit,
        }
        while True:
            with aws_errors(f"events of job {job_id}"):
                page = self._db.query(**query)
            events.extend(_event_from_item(_from_item(item)) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page or len(events) >= limit:
                return events
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- internals ----------------------------------------------------------------------------

    def _message_values(self, message: Message) -> dict[str, Any]:
        text = message.text
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[:MAX_MESSAGE_CHARS] + f"\n… [cut: {len(message.text)} characters in all]"
        return {"importance": message.importance, "text": text, "time": message.time}

    def _append(
        self,
        job: Job,
        events: list[dict[str, Any]],
        now: float,
        *,
        new_state: JobState | None,
    ) -> None:
        """Write `events` after the job's last one, advancing its counter from the value read
        (the condition makes concurrent appenders retry instead of interleaving)."""
        expires_at = int(job.created_at + self._retention_seconds)
        new_seq = job.seq + len(events)
        update = "SET seq = :new"
        values: dict[str, Any] = {":old": job.seq, ":new": new_seq}
        if new_state is not None:
            update += ", #state = :to, state_time = :now"
            values.update({":to": new_state.value, ":now": _decimal(now), ":from": job.state.value})
        record_update: dict[str, Any] = {
            "TableName": self._table,
            "Key": job_key(job.job_id),
            "UpdateExpression": update,
            "ConditionExpression": "seq = :old"
            + (" AND #state = :from" if new_state is not None else ""),
            "ExpressionAttributeValues": _to_item(values),
        }
        if new_state is not None:
            record_update["ExpressionAttributeNames"] = {"#state": "state"}
        items: list[dict[str, Any]] = [{"Update": record_update}]
        for offset, values_ in enumerate(events, start=1):
            event_time = values_.pop("time", now)
            item = self._event_item(job.job_id, job.seq + offset, event_time, values_, expires_at)
            items.append({"Put": {"TableName": self._table, "Item": item}})
        with aws_errors(f"job {job.job_id}"):
            self._db.transact_write_items(TransactItems=items)

    @staticmethod
    def _event_item(
        job_id: str, seq: int, at: float, values: dict[str, Any], expires_at: int
    ) -> dict[str, Any]:
        return _to_item(
            {
                "pk": f"job#{job_id}",
                "sk": _event_sk(seq),
                "seq": seq,
                "time": _decimal(at),
                "expires_at": expires_at,
                **values,
            }
        )


class TransitionRejected(FailedPrecondition):
    """The job's current state does not allow the requested transition."""

    def __init__(self, job: Job, to: JobState) -> None:
        verb = "is final" if is_terminal(job.state) else f"cannot move to {to.value}"
        super().__init__(f"job {job.job_id} is {job.state.value}: the state {verb}")
        self.job = job
        self.to = to


def _event_sk(seq: int) -> str:
    return f"{EVENT_PREFIX}{seq:012d}"


def _event_from_item(values: dict[str, Any]) -> Event:
    state = values.get("state")
    return Event(
        seq=int(values["seq"]),
        time=float(values["time"]),
        state=JobState(state) if state else None,
        importance=values.get("importance"),
        text=values.get("text"),
    )
