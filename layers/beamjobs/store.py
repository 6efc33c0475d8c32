"""The job store: the one data-access class over the DynamoDB table (single-table design).

Items of a job, all under the partition key ``job#<id>``:

- ``sk = "ev#<seq, zero-padded>"``: the job's event log, the source of truth. An event is a state
  change or a batch of messages; every event also records the job's state after it
  (``job_state``). Writers append at "last seq + 1" with a conditional put (the slot must be
  free), so two writers never both append after the same tail: the loser re-reads the tail,
  decides again, and retries. The order is total and gap-free; replay is one Query.
- ``sk = "job"``: the job record (name, timestamps, blob references, and a projection of the
  state for listing). It sorts after every event, so one descending Query of two items reads the
  record and the log's tail together.
- ``sk = "beat"``: when the job's worker last said it was alive. An item of its own, outside
  every index, so a heartbeat writes one small item, not the record into two indexes whose
  partition keys are constants (which hundreds of running jobs would saturate). It sorts before
  every event.

No transactions: each write is a single conditional item write (TransactWriteItems would also
work on DynamoDB, but the embedded AWS copies a whole table per transaction).
Listing uses the ``gsi1`` index (``gsi1pk = "jobs"``, ``gsi1sk = <created>#<id>``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from beamjobs.aws import aws_errors
from beamjobs.errors import BeamjobsError, Conflict, FailedPrecondition, NotFound, Unavailable
from beamjobs.states import JobState, can_transition, is_terminal

logger = logging.getLogger(__name__)

JOB_SK = "job"
BEAT_SK = "beat"
# The attribute holding a write's writer token (see JobStore._put_new).
WRITER = "writer"
EVENT_PREFIX = "ev#"
LIST_INDEX = "gsi1"
LIST_PARTITION = "jobs"
ACTIVE_INDEX = "active"
# Jobs that have started and not ended; the attribute is removed at the terminal state.
ACTIVE_PARTITION = "active"
_ACTIVE_STATES = frozenset(
    {JobState.STARTING, JobState.RUNNING, JobState.CANCELLING, JobState.DRAINING}
)
# Appends lose races only to other writers of the same job; re-reading settles it quickly.
_MAX_RACE_RETRIES = 50
# DynamoDB items are at most 400 KB, measured in UTF-8 bytes as stored: a message longer than
# this is cut (and says so), and a batch of messages holds at most this many bytes of text.
MAX_MESSAGE_BYTES = 100_000
# Events read per call of JobStore.events: fewer means there were no more.
EVENTS_PAGE = 500
# Keys per BatchGetItem, DynamoDB's most.
_BATCH_GET_KEYS = 100
_MAX_BATCH_BYTES = 300_000

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def _decimal(value: float) -> Decimal:
    return Decimal(repr(round(value, 6)))


def _pk(job_id: str) -> str:
    return f"job#{job_id}"


def _event_sk(seq: int) -> str:
    return f"{EVENT_PREFIX}{seq:012d}"


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


def unknown_job(job_id: str) -> NotFound:
    return NotFound(f"job {job_id!r} does not exist")


def job_to_json(job: Job) -> str:
    """The job as one line of JSON (a started job handed to a local worker)."""
    return json.dumps({**asdict(job), "state": job.state.value})


def job_from_json(text: str) -> Job:
    values = json.loads(text)
    return Job(
        **{
            **values,
            "state": JobState(values["state"]),
            "environment_urns": tuple(values["environment_urns"]),
            "unstaged": tuple(values["unstaged"]),
        }
    )


@dataclass(frozen=True)
class Message:
    """A job message; importance is Beam's name (JOB_MESSAGE_*)."""

    importance: str
    text: str
    time: float


@dataclass(frozen=True)
class Event:
    """One stored event of a job: a state change, or a batch of messages."""

    seq: int
    time: float
    state: JobState | None = None
    messages: tuple[Message, ...] = ()


class TransitionRejected(FailedPrecondition):
    """The job's current state does not allow the requested transition."""

    def __init__(self, job: Job, to: JobState) -> None:
        verb = "is final" if is_terminal(job.state) else f"cannot move to {to.value}"
        super().__init__(f"job {job.job_id} is {job.state.value}: the state {verb}")
        self.job = job
        self.to = to


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
        """Record a new job with its first state event. Raises Conflict when the id exists.
        The event goes first: a record is never without a state."""
        expires_at = self._expiry(job.created_at)
        self._put_event(
            job.job_id,
            1,
            job.state_time,
            {"state": job.state.value},
            (job.state, job.state_time),
            expires_at,
        )
        record = {
            "pk": _pk(job.job_id),
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
            "unstaged": list(job.unstaged) or None,
            "gsi1pk": LIST_PARTITION,
            "gsi1sk": f"{job.created_at:017.6f}#{job.job_id}",
            "expires_at": expires_at,
        }
        self._put_new(record, "attribute_not_exists(pk)", f"job {job.job_id}")

    def get(self, job_id: str) -> Job:
        """The job with its current state, read from the log's tail (strongly consistent)."""
        with aws_errors(f"job {job_id}"):
            page = self._db.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues=_to_item({":pk": _pk(job_id)}),
                ScanIndexForward=False,
                ConsistentRead=True,
                Limit=2,
            )
        items = [_from_item(item) for item in page.get("Items", [])]
        if not items or items[0]["sk"] != JOB_SK:
            raise unknown_job(job_id)
        record, tail = items[0], (items[1] if len(items) > 1 else None)
        job = _job_from_record(record)
        if tail is not None:
            projected = job.seq
            job = _replace_state(
                job, JobState(tail["job_state"]), float(tail["job_state_time"]), int(tail["seq"])
            )
            if job.seq > projected:
                # The projection of a state onto the record was lost (a kill or throttle between
                # the two writes): whoever reads the job repairs it, and so the listing, the
                # active index and the reconciler see the log's state again.
                self._project_state(job_id, job.state, job.state_time, job.seq)
        return job

    def list_jobs(self, *, page_size: int = 100) -> list[Job]:
        """Every job, oldest first, with the state of its record's projection."""
        return self._query_index(LIST_INDEX, "gsi1pk", LIST_PARTITION, page_size)

    def recent_jobs(self, limit: int) -> list[Job]:
        """The `limit` newest jobs, newest first (by their records' projections)."""
        return self._query_index(
            LIST_INDEX, "gsi1pk", LIST_PARTITION, min(limit, 1000), newest_first=True, limit=limit
        )

    def active_jobs(self, *, page_size: int = 100) -> list[Job]:
        """Jobs that started and have not ended (by their records' projections)."""
        return self._query_index(ACTIVE_INDEX, "active", ACTIVE_PARTITION, page_size)

    def heartbeat(self, job_id: str) -> JobState:
        """Record that the job's worker is alive; return the job's state (from its log, the
        truth), so a worker learns that its job was cancelled or failed meanwhile."""
        job = self.get(job_id)
        now = self._clock()
        with aws_errors(f"heartbeat of job {job_id}"):
            self._db.update_item(
                TableName=self._table,
                Key=_to_item({"pk": _pk(job_id), "sk": BEAT_SK}),
                UpdateExpression="SET beat_at = :t, expires_at = :e",
                ExpressionAttributeValues=_to_item(
                    {":t": _decimal(now), ":e": self._expiry(job.created_at)}
                ),
            )
        return job.state

    def heartbeats(self, job_ids: Sequence[str]) -> dict[str, float]:
        """When each job's worker last said it was alive; jobs never heard of are absent."""
        beats: dict[str, float] = {}
        for start in range(0, len(job_ids), _BATCH_GET_KEYS):
            keys = [
                _to_item({"pk": _pk(job_id), "sk": BEAT_SK})
                for job_id in job_ids[start : start + _BATCH_GET_KEYS]
            ]
            request: dict[str, Any] = {
                self._table: {"Keys": keys, "ProjectionExpression": "pk, beat_at"}
            }
            # DynamoDB may answer part of a batch (UnprocessedKeys): ask for the rest.
            while request:
                with aws_errors("heartbeats"):
                    answer = self._db.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self._table, []):
                    values = _from_item(item)
                    beats[str(values["pk"])[len("job#") :]] = float(values["beat_at"])
                request = answer.get("UnprocessedKeys") or {}
        return beats

    def _query_index(
        self,
        index: str,
        key: str,
        value: str,
        page_size: int,
        *,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[Job]:
        jobs: list[Job] = []
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": f"{key} = :p",
            "ExpressionAttributeValues": _to_item({":p": value}),
            "Limit": page_size,
            "ScanIndexForward": not newest_first,
        }
        while True:
            with aws_errors("job list"):
                page = self._db.query(**query)
            jobs.extend(_job_from_record(_from_item(item)) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page or (limit is not None and len(jobs) >= limit):
                return jobs[:limit]
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def set_metrics_ref(self, job_id: str, metrics_ref: str) -> None:
        self._update_record(job_id, "SET metrics_ref = :m", {":m": metrics_ref})

    def record_staging(self, job_id: str, pipeline_ref: str, unstaged: Sequence[str]) -> None:
        """Record a staging session's outcome on a preparation: the pipeline with its staged
        references, and what is still unstaged. Raises FailedPrecondition once the job ran."""
        update = "SET pipeline_ref = :p"
        values: dict[str, Any] = {":p": pipeline_ref, ":stopped": JobState.STOPPED.value}
        if unstaged:
            update += ", unstaged = :u"
            values[":u"] = list(unstaged)
        else:
            update += " REMOVE unstaged"
        try:
            self._update_record(job_id, update, values, condition="#state = :stopped")
        except Conflict as conflict:
            self.get(job_id)  # NotFound for an unknown job
            raise FailedPrecondition(
                f"job {job_id} was already run: its artifacts can no longer change"
            ) from conflict

    def stream_arn(self) -> str:
        """The table's current DynamoDB Stream (Unavailable when it has none)."""
        with aws_errors(f"table {self._table}"):
            table = self._db.describe_table(TableName=self._table)["Table"]
        arn = table.get("LatestStreamArn")
        if not arn or not table.get("StreamSpecification", {}).get("StreamEnabled", True):
            raise Unavailable(f"table {self._table} has no stream enabled")
        return str(arn)

    # -- state and messages -------------------------------------------------------------------

    def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        only_from: Iterable[JobState] | None = None,
        messages: Sequence[Message] = (),
        require: Callable[[Job], None] | None = None,
        known: Job | None = None,
    ) -> Job:
        """Move a job to `to`, after appending `messages` (e.g. a failure's cause). Raises
        TransitionRejected when the current state forbids it or is not in `only_from`, and
        whatever `require` raises when it refuses the job as read.

        `known` is the job as the caller last saw it (e.g. a worker handed its job as it was
        started): the first attempt appends after it without reading the job; if the log has
        moved on since, the job is read and the transition decided again."""
        allowed_from = frozenset(only_from) if only_from is not None else None
        self.append_messages(job_id, messages)
        for _ in range(_MAX_RACE_RETRIES):
            job, known = (known, None) if known is not None else (self.get(job_id), None)
            if not can_transition(job.state, to) or (
                allowed_from is not None and job.state not in allowed_from
            ):
                raise TransitionRejected(job, to)
            if require is not None:
                require(job)
            now = self._clock()
            try:
                self._put_event(
                    job_id,
                    job.seq + 1,
                    now,
                    {"state": to.value},
                    (to, now),
                    self._expiry(job.created_at),
                )
            except Conflict:
                continue  # another writer appended first: decide again on the new tail
            self._project_state(job_id, to, now, job.seq + 1)
            return _replace_state(job, to, now, job.seq + 1)
        raise Conflict(f"job {job_id}: too many concurrent writers")

    def append_messages(self, job_id: str, messages: Sequence[Message]) -> None:
        """Append messages in order (in as few events as the item size allows)."""
        for batch in message_batches(messages):
            values = {
                "messages": [
                    {"importance": m.importance, "text": m.text, "time": _decimal(m.time)}
                    for m in batch
                ]
            }
            for _ in range(_MAX_RACE_RETRIES):
                job = self.get(job_id)
                try:
                    self._put_event(
                        job_id,
                        job.seq + 1,
                        self._clock(),
                        values,
                        (job.state, job.state_time),
                        self._expiry(job.created_at),
                    )
                    break
                except Conflict:
                    continue
            else:
                raise Conflict(f"job {job_id}: too many concurrent writers")

    def events(self, job_id: str, *, after_seq: int = 0, limit: int = EVENTS_PAGE) -> list[Event]:
        """Stored events with a sequence number above `after_seq`, in order (at most about
        `limit`; call again after the last one for more)."""
        events: list[Event] = []
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": _to_item(
                {":pk": _pk(job_id), ":lo": _event_sk(after_seq + 1), ":hi": EVENT_PREFIX + "~"}
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

    def _expiry(self, created_at: float) -> int:
        return int(created_at + self._retention_seconds)

    def _put_event(
        self,
        job_id: str,
        seq: int,
        at: float,
        values: dict[str, Any],
        job_state: tuple[JobState, float],
        expires_at: int,
    ) -> None:
        """Write event `seq` if that slot is free; Conflict when another writer took it.
        `job_state` is the job's state (and since when) once this event is written."""
        item = {
            "pk": _pk(job_id),
            "sk": _event_sk(seq),
            "seq": seq,
            "time": _decimal(at),
            "job_state": job_state[0].value,
            "job_state_time": _decimal(job_state[1]),
            "expires_at": expires_at,
            **values,
        }
        self._put_new(item, "attribute_not_exists(sk)", f"job {job_id}")

    def _put_new(self, item: dict[str, Any], condition: str, what: str) -> None:
        """Put an item whose condition says its key is free; Conflict when another writer's
        item is there. The item carries a writer token: when botocore retries a put that was
        applied but whose response was lost, the condition fails on the writer's own item,
        which is recognised by its token (and is a success, not a rival's write)."""
        writer = uuid.uuid4().hex
        try:
            with aws_errors(what):
                self._db.put_item(
                    TableName=self._table,
                    Item=_to_item({**item, WRITER: writer}),
                    ConditionExpression=condition,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except Conflict as conflict:
            if _written_by(conflict.__cause__, writer):
                return
            raise

    def _project_state(self, job_id: str, state: JobState, at: float, seq: int) -> None:
        """Copy a new state onto the record (for listing). Only ever moves forward; a newer
        projection that landed first wins. The log stays the truth if this write is lost."""
        update = "SET #state = :s, state_time = :t, seq = :n"
        values: dict[str, Any] = {":s": state.value, ":t": _decimal(at), ":n": seq}
        if state in _ACTIVE_STATES:
            update += ", active = :a"
            values[":a"] = ACTIVE_PARTITION
        else:
            update += " REMOVE active"
        try:
            self._update_record(job_id, update, values, condition="seq < :n")
        except Conflict:
            pass  # a later state was projected already
        except BeamjobsError:
            # The event is written, and it is the truth: the next reader of the job repairs the
            # record (see get), rather than the writer failing a transition that happened.
            logger.warning("projecting %s of job %s failed", state.value, job_id, exc_info=True)

    def _update_record(
        self,
        job_id: str,
        update: str,
        values: dict[str, Any],
        *,
        condition: str | None = None,
        **extra: Any,
    ) -> Any:
        """One update of the job's record, which must exist (and meet `condition`); `#state`
        names the state attribute (a reserved word), declared only when used, as DynamoDB
        requires. Conflict when a condition fails."""
        expression = "attribute_exists(pk)" + (f" AND {condition}" if condition else "")
        names = {"#state": "state"} if "#state" in update + expression else {}
        with aws_errors(f"job {job_id}"):
            return self._db.update_item(
                TableName=self._table,
                Key=_to_item({"pk": _pk(job_id), "sk": JOB_SK}),
                UpdateExpression=update,
                ConditionExpression=expression,
                ExpressionAttributeValues=_to_item(values),
                **({"ExpressionAttributeNames": names} if names else {}),
                **extra,
            )


def _written_by(error: BaseException | None, writer: str) -> bool:
    """Whether a failed conditional put found the item that `writer` itself put."""
    if not isinstance(error, ClientError):
        return False
    existing = error.response.get("Item", {}).get(WRITER, {})
    return bool(existing.get("S") == writer)


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _cut(message: Message) -> Message:
    size = _utf8_size(message.text)
    if size <= MAX_MESSAGE_BYTES:
        return message
    # Cut at a byte bound (dropping a character the bound splits) that leaves room for the
    # note, so a cut message is within the bound and is never cut again.
    note = f"\n… [cut: {size} bytes in all]"
    room = MAX_MESSAGE_BYTES - _utf8_size(note)
    kept = message.text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
    return Message(message.importance, kept + note, message.time)


def message_batches(messages: Sequence[Message]) -> list[list[Message]]:
    """The messages (cut to size) in the batches append_messages stores, one event each."""
    batches: list[list[Message]] = []
    size = _MAX_BATCH_BYTES
    for message in map(_cut, messages):
        length = _utf8_size(message.text)
        if size + length > _MAX_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(message)
        size += length
    return batches


def _job_from_record(values: dict[str, Any]) -> Job:
    return Job(
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
        unstaged=tuple(values.get("unstaged") or ()),
    )


def _replace_state(job: Job, state: JobState, at: float, seq: int) -> Job:
    return replace(job, state=state, state_time=at, seq=seq)


def event_from_stream_image(image: dict[str, Any]) -> tuple[str, Event] | None:
    """The job id and event in a stream record's new image; None for any other item."""
    values = _from_item(image)
    pk, sk = str(values.get("pk", "")), str(values.get("sk", ""))
    if not pk.startswith("job#") or not sk.startswith(EVENT_PREFIX):
        return None
    return pk[len("job#") :], _event_from_item(values)


def _event_from_item(values: dict[str, Any]) -> Event:
    state = values.get("state")
    return Event(
        seq=int(values["seq"]),
        time=float(values["time"]),
        state=JobState(state) if state else None,
        messages=tuple(
            Message(m["importance"], m["text"], float(m["time"]))
            for m in values.get("messages", [])
        ),
    )
