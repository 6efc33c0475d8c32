"""The job store on one DynamoDB table (single-table design): item mapping and appends only.

Items of a job, all under the partition key ``job#<id>``:

- ``sk = "ev#<seq, zero-padded>"``: the job's log (beamjobs.domain.store). Each event holds its
  change and the job's snapshot after it (``job_state``, ``job_state_time``, ``job_pipeline_ref``,
  ``job_unstaged``, ``job_artifacts``, ``job_started_at``, the staging token's
  ``job_staging_*``, and a mirrored job's ``job_upstream_*``). An append is a put conditional
  on a free slot.
- ``sk = "job"``: the job record: what never changes (name, owner, options, created, the
  staging token's hash, the worker secret), and a projection of the snapshot for listing
  (``gsi1``; ``owner``, an owner's jobs; ``state``, one state's jobs) and for the reconciler
  (``active``, only while the job is active). It sorts after every event, so one descending
  Query of two items reads the record and the log's tail together. Messages do not touch it:
  only a changed snapshot does.
- ``sk = "beat"``: when the job's worker last said it was alive. An item of its own, outside
  every index, so a heartbeat writes one small item. It sorts before every event.

No transactions: each write is a single conditional item write. A projection may be lost (a
kill or throttle between the event and the record's update): whoever reads the job sees the
tail's snapshot and repairs the record. Every item expires (TTL) `item_lifetime` seconds after
it was written (beamjobs.domain.jobs.item_lifetime says why that outlives the job).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from beamjobs.aws import malformed_items
from beamjobs.aws.errors import aws_errors
from beamjobs.domain import poison
from beamjobs.domain.errors import BeamjobsError, Conflict, MalformedItem, Unavailable
from beamjobs.domain.model import (
    ACTIVE_STATES,
    EVENT_PAGE_BYTES,
    Change,
    Event,
    Job,
    Message,
    Staged,
    StagingLease,
    Upstream,
    event_bytes,
    unknown_job,
)
from beamjobs.domain.states import JobState
from beamjobs.domain.store import EventPage, JobPage, JobQuery, JobStore, listing_key

logger = logging.getLogger(__name__)

JOB_SK = "job"
BEAT_SK = "beat"
# The attribute holding a write's writer token (see _put_new).
WRITER = "writer"
EVENT_PREFIX = "ev#"
LIST_INDEX = "gsi1"
LIST_PARTITION = "jobs"
OWNER_INDEX = "owner"
STATE_INDEX = "state"
ACTIVE_INDEX = "active"
ACTIVE_PARTITION = "active"
# Jobs read per page of an index.
_INDEX_PAGE = 100
# Index items a filtered listing page reads at most (each costs a read, matched or not): a page
# of a rare filter ends there, with a next page, rather than reading the whole index.
_LISTING_READ_BUDGET = 2000
# Keys per BatchGetItem, DynamoDB's most.
_BATCH_GET_KEYS = 100

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


class DynamoJobStore(JobStore):
    def __init__(
        self,
        dynamodb: Any,
        table_name: str,
        *,
        item_lifetime: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = dynamodb
        self._table = table_name
        self._lifetime = item_lifetime
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    def create(self, job: Job) -> None:
        # The event goes first: a record is never without a state.
        self._put_event(Change(state=job.state), job, at=job.state_time)
        record = {
            "pk": _pk(job.job_id),
            "sk": JOB_SK,
            "job_id": job.job_id,
            "job_name": job.job_name,
            "owner": job.owner,
            "staging_token_sha256": job.staging_token_sha256,
            "worker_secret": job.worker_secret,
            "created_at": _decimal(job.created_at),
            "options_ref": job.options_ref,
            "options_json": job.options_json,
            "bounded": job.bounded,
            "environment_urns": list(job.environment_urns),
            "engine": job.engine or None,
            "gsi1pk": LIST_PARTITION,
            "gsi1sk": listing_key(job),
            "seq": job.seq,
            **_snapshot(job),
            "expires_at": self._expiry(),
        }
        self._put_new(record, "attribute_not_exists(pk)", f"job {job.job_id}")

    def get(self, job_id: str) -> Job:
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
        record = _job_from_record(items[0])
        if len(items) < 2:
            return record
        tail = items[1]
        try:
            job = _with_snapshot(record, tail)
        except poison.DECODING_ERRORS as error:
            raise poison.malformed(_key(tail), error) from error
        if _snapshot(job) != _snapshot(record):
            # The record's projection was lost or is late: bring it up to the log.
            self._project(job)
        return job

    def append(self, job: Job, change: Change) -> Job:
        now = round(self._clock(), 6)  # as stored, so the job answered is the job read later
        after = job.after(change, job.seq + 1, now)
        self._put_event(change, after, at=now)
        if _snapshot(after) != _snapshot(job):
            self._project(after)
        return after

    def event_page(self, job_id: str, after_seq: int) -> EventPage:
        events: list[Event] = []
        size = 0
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": _to_item(
                {":pk": _pk(job_id), ":lo": _event_sk(after_seq + 1), ":hi": EVENT_PREFIX + "~"}
            ),
            "ConsistentRead": True,
        }
        while True:
            with aws_errors(f"events of job {job_id}"):
                page = self._db.query(**query)
            for item in page.get("Items", []):
                event = _event_from_item(_from_item(item))
                events.append(event)
                size += event_bytes(event)
            if "LastEvaluatedKey" not in page:
                return EventPage(events, complete=True)
            if size >= EVENT_PAGE_BYTES:
                return EventPage(events, complete=False)
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def job_page(self, query: JobQuery, limit: int, *, after: str | None = None) -> JobPage:
        request, partition = listing_query(query)
        request["TableName"] = self._table
        if after is not None:
            # A page starts after a key of the index: its partition, the job's and `after`.
            start = {**partition, "pk": _pk(after.partition("#")[2]), "sk": JOB_SK}
            request["ExclusiveStartKey"] = _to_item({**start, "gsi1sk": after})
        filtered = "FilterExpression" in request
        jobs: list[Job] = []
        read = 0
        while True:
            wanted = limit - len(jobs)
            # Unfiltered, every item read is listed: read just what is asked for.
            request["Limit"] = (
                min(_LISTING_READ_BUDGET - read, max(wanted, _INDEX_PAGE)) if filtered else wanted
            )
            with aws_errors("job list"):
                page = self._db.query(**request)
            read += int(page.get("ScannedCount", 0))
            jobs += _listed_jobs(page)
            last = page.get("LastEvaluatedKey")
            if len(jobs) >= limit:
                # The page ends at its last job, even if the index was read further.
                more = len(jobs) > limit or last is not None
                return JobPage(jobs[:limit], listing_key(jobs[limit - 1]) if more else None)
            if last is None:
                return JobPage(jobs, None)
            if read >= _LISTING_READ_BUDGET:
                return JobPage(jobs, str(_from_item(last)["gsi1sk"]))
            request["ExclusiveStartKey"] = last

    def active_jobs(self) -> list[Job]:
        return self._query_index(ACTIVE_INDEX, "active", ACTIVE_PARTITION)

    def list_jobs(self) -> list[Job]:
        """Every job, oldest first (as listed)."""
        return self._query_index(LIST_INDEX, "gsi1pk", LIST_PARTITION, oldest_first=True)

    def beat(self, job_id: str) -> None:
        with aws_errors(f"heartbeat of job {job_id}"):
            self._db.update_item(
                TableName=self._table,
                Key=_to_item({"pk": _pk(job_id), "sk": BEAT_SK}),
                UpdateExpression="SET beat_at = :t, expires_at = :e",
                ExpressionAttributeValues=_to_item(
                    {":t": _decimal(self._clock()), ":e": self._expiry()}
                ),
            )

    def heartbeats(self, job_ids: Sequence[str]) -> dict[str, float]:
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
                    try:
                        beats[str(values["pk"])[len("job#") :]] = float(values["beat_at"])
                    except poison.DECODING_ERRORS as error:  # as if never heard of
                        malformed_items.skipped("the heartbeats", _key(values), error)
                request = answer.get("UnprocessedKeys") or {}
        return beats

    def set_metrics_ref(self, job_id: str, metrics_ref: str) -> None:
        self._update_record(job_id, "SET metrics_ref = :m", {":m": metrics_ref})

    def count(self, counter: str, limit: int, *, keep_seconds: float) -> bool:
        # Counters are items of their own partition, apart from every job's; the condition
        # makes the check and the increment one step, whichever shim or handler counts. The
        # writer token tells a retry whose first attempt counted (its response lost) from a
        # counter that was full already.
        writer = uuid.uuid4().hex
        try:
            with aws_errors(f"counter {counter}"):
                self._db.update_item(
                    TableName=self._table,
                    Key=_to_item({"pk": f"counter#{counter}", "sk": "counter"}),
                    UpdateExpression=(
                        f"ADD n :one SET {WRITER} = :w, expires_at = if_not_exists(expires_at, :e)"
                    ),
                    ConditionExpression="attribute_not_exists(n) OR n < :limit",
                    ExpressionAttributeValues=_to_item(
                        {
                            ":one": 1,
                            ":limit": limit,
                            ":w": writer,
                            ":e": int(self._clock() + keep_seconds),
                        }
                    ),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except Conflict as conflict:
            return _written_by(conflict.__cause__, writer)
        return True

    def stream_arn(self) -> str:
        """The table's current DynamoDB Stream (Unavailable when it has none)."""
        with aws_errors(f"table {self._table}"):
            table = self._db.describe_table(TableName=self._table)["Table"]
        arn = table.get("LatestStreamArn")
        if not arn or not table.get("StreamSpecification", {}).get("StreamEnabled", True):
            raise Unavailable(f"table {self._table} has no stream enabled")
        return str(arn)

    # -- internals ----------------------------------------------------------------------------

    def _expiry(self) -> int:
        return int(self._clock() + self._lifetime)

    def _query_index(
        self, index: str, key: str, value: str, *, oldest_first: bool = False
    ) -> list[Job]:
        """Every job in an index's partition."""
        jobs: list[Job] = []
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": f"{key} = :p",
            "ExpressionAttributeValues": _to_item({":p": value}),
            "Limit": _INDEX_PAGE,
            "ScanIndexForward": oldest_first,
        }
        while True:
            with aws_errors("job list"):
                page = self._db.query(**query)
            jobs += _listed_jobs(page)
            if "LastEvaluatedKey" not in page:
                return jobs
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _put_event(self, change: Change, after: Job, *, at: float) -> None:
        """Write `change` as event `after.seq` (the job after it: `after`), written at `at`, if
        that slot is free; Conflict when another writer took it."""
        item: dict[str, Any] = {
            "pk": _pk(after.job_id),
            "sk": _event_sk(after.seq),
            "seq": after.seq,
            "time": _decimal(at),
            "expires_at": self._expiry(),
            **{f"job_{name}": value for name, value in _snapshot(after).items()},
        }
        if change.state is not None:
            item["state"] = change.state.value
        if change.messages:
            item["messages"] = [
                {"importance": m.importance, "text": m.text, "time": _decimal(m.time)}
                for m in change.messages
            ]
        if change.staged is not None:
            item["staged_pipeline_ref"] = change.staged.pipeline_ref
            item["staged_unstaged"] = list(change.staged.unstaged)
            item["staged_artifacts"] = list(change.staged.artifacts)
        self._put_new(item, "attribute_not_exists(sk)", f"job {after.job_id}")

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

    def _project(self, job: Job) -> None:
        """Copy the job's snapshot as of its last event (`job.seq`) onto the record. Only ever
        moves forward (a later projection that landed first wins), and never fails its caller:
        the log is the truth, and the next reader repairs a lost projection."""
        snapshot = _snapshot(job)
        assignments = [
            f"#{name} = :{name}" for name, value in snapshot.items() if value is not None
        ]
        removals = [f"#{name}" for name, value in snapshot.items() if value is None]
        values: dict[str, Any] = {f":{n}": v for n, v in snapshot.items() if v is not None}
        values.update({":n": job.seq, ":e": self._expiry()})
        assignments += ["seq = :n", "expires_at = :e"]
        if job.state in ACTIVE_STATES:
            assignments.append("active = :a")
            values[":a"] = ACTIVE_PARTITION
        else:
            removals.append("active")
        update = "SET " + ", ".join(assignments)
        if removals:
            update += " REMOVE " + ", ".join(removals)
        try:
            self._update_record(
                job.job_id, update, values, condition="seq < :n", names=list(snapshot)
            )
        except Conflict:
            pass  # a later snapshot was projected already
        except BeamjobsError:
            logger.warning("projecting job %s failed", job.job_id, exc_info=True)

    def _update_record(
        self,
        job_id: str,
        update: str,
        values: dict[str, Any],
        *,
        condition: str | None = None,
        names: Sequence[str] = (),
    ) -> None:
        """One update of the job's record, which must exist (and meet `condition`); `names`
        are attributes written as `#name` (some, like state, are reserved words)."""
        expression = "attribute_exists(pk)" + (f" AND {condition}" if condition else "")
        with aws_errors(f"job {job_id}"):
            self._db.update_item(
                TableName=self._table,
                Key=_to_item({"pk": _pk(job_id), "sk": JOB_SK}),
                UpdateExpression=update,
                ConditionExpression=expression,
                ExpressionAttributeValues=_to_item(values),
                **({"ExpressionAttributeNames": {f"#{n}": n for n in names}} if names else {}),
            )


def _listed_jobs(page: dict[str, Any]) -> list[Job]:
    """The jobs of a page of an index; a malformed one is skipped (it must not hide every
    job)."""
    jobs = []
    for item in page.get("Items", []):
        values = _from_item(item)
        try:
            jobs.append(_job_from_record(values))
        except MalformedItem as error:
            malformed_items.skipped("the job list", _key(values), error)
    return jobs


def listing_query(query: JobQuery) -> tuple[dict[str, Any], dict[str, str]]:
    """The Query of the index that serves `query` best (an owner's jobs, or one state's, or all
    of them; the creation times as a key range; what the index's key cannot say as a filter),
    and the index's partition key. (`make bench` reads a page with it to count the items read.)"""
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    filters: list[str] = []
    states = sorted(state.value for state in query.states)
    if query.owner is not None:
        index, partition = OWNER_INDEX, {"owner": query.owner}
    elif len(states) == 1:
        index, partition = STATE_INDEX, {"state": states[0]}
        states = []
    else:
        index, partition = LIST_INDEX, {"gsi1pk": LIST_PARTITION}
    [(key, value)] = partition.items()
    names["#p"] = key
    values[":p"] = value
    condition = "#p = :p"
    # Listing keys are "<created, fixed width>#<id>": a time alone sorts before every key of
    # jobs created at it, and after every key of jobs created before it.
    low = None if query.created_after is None else f"{query.created_after:017.6f}"
    high = None if query.created_before is None else f"{query.created_before:017.6f}"
    if low is not None and high is not None:
        condition += " AND gsi1sk BETWEEN :low AND :high"
        values.update({":low": low, ":high": high})
    elif low is not None:
        condition += " AND gsi1sk >= :low"
        values[":low"] = low
    elif high is not None:
        condition += " AND gsi1sk < :high"
        values[":high"] = high
    if states:
        names["#s"] = "state"
        placeholders = [f":s{i}" for i in range(len(states))]
        values.update(zip(placeholders, states, strict=True))
        filters.append(f"#s IN ({', '.join(placeholders)})")
    if query.name_prefix:
        values[":name"] = query.name_prefix
        filters.append("begins_with(job_name, :name)")
    request: dict[str, Any] = {
        "IndexName": index,
        "KeyConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": _to_item(values),
        "ScanIndexForward": False,
    }
    if filters:
        request["FilterExpression"] = " AND ".join(filters)
    return request, partition


def _snapshot(job: Job) -> dict[str, Any]:
    """The part of a job its events change, as stored (None: absent)."""
    return {
        "state": job.state.value,
        "state_time": _decimal(job.state_time),
        "pipeline_ref": job.pipeline_ref,
        "unstaged": list(job.unstaged) or None,
        "artifacts": list(job.artifacts) or None,
        "started_at": None if job.started_at is None else _decimal(job.started_at),
        "staging_session": job.staging_lease.session if job.staging_lease else None,
        "staging_until": _decimal(job.staging_lease.until) if job.staging_lease else None,
        "staging_spent": job.staging_spent or None,
        "upstream_job_id": job.upstream.job_id if job.upstream else None,
        "upstream_cursor": job.upstream.cursor if job.upstream else None,
    }


def _with_snapshot(job: Job, event: dict[str, Any]) -> Job:
    """The job with the snapshot an event item recorded."""
    started_at = event.get("job_started_at")
    return replace(
        job,
        seq=int(event["seq"]),
        state=JobState(event["job_state"]),
        state_time=float(event["job_state_time"]),
        pipeline_ref=str(event["job_pipeline_ref"]),
        unstaged=tuple(event.get("job_unstaged") or ()),
        artifacts=tuple(event.get("job_artifacts") or ()),
        started_at=None if started_at is None else float(started_at),
        staging_lease=_lease(event.get("job_staging_session"), event.get("job_staging_until")),
        staging_spent=bool(event.get("job_staging_spent")),
        upstream=_upstream(event.get("job_upstream_job_id"), event.get("job_upstream_cursor")),
    )


def _lease(session: Any, until: Any) -> StagingLease | None:
    return None if session is None else StagingLease(str(session), float(until))


def _upstream(job_id: Any, cursor: Any) -> Upstream | None:
    return None if job_id is None else Upstream(str(job_id), str(cursor or ""))


def _written_by(error: BaseException | None, writer: str) -> bool:
    """Whether a failed conditional put found the item that `writer` itself put."""
    if not isinstance(error, ClientError):
        return False
    existing = error.response.get("Item", {}).get(WRITER, {})
    return bool(existing.get("S") == writer)


def _key(values: dict[str, Any]) -> str:
    return f"{str(values.get('pk'))[:300]!r}/{str(values.get('sk'))[:100]!r}"


def _job_from_record(values: dict[str, Any]) -> Job:
    try:
        return _read_job(values)
    except poison.DECODING_ERRORS as error:
        raise poison.malformed(_key(values), error) from error


def _read_job(values: dict[str, Any]) -> Job:
    started_at = values.get("started_at")
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
        artifacts=tuple(values.get("artifacts") or ()),
        started_at=None if started_at is None else float(started_at),
        owner=values.get("owner"),
        staging_token_sha256=values.get("staging_token_sha256"),
        worker_secret=values.get("worker_secret"),
        staging_lease=_lease(values.get("staging_session"), values.get("staging_until")),
        staging_spent=bool(values.get("staging_spent")),
        engine=str(values.get("engine", "")),
        upstream=_upstream(values.get("upstream_job_id"), values.get("upstream_cursor")),
    )


def event_from_stream_image(image: dict[str, Any]) -> tuple[str, Event] | None:
    """The job id and event in a stream record's new image; None for any other item."""
    values = _from_item(image)
    pk, sk = str(values.get("pk", "")), str(values.get("sk", ""))
    if not pk.startswith("job#") or not sk.startswith(EVENT_PREFIX):
        return None
    return pk[len("job#") :], _event_from_item(values)


def _event_from_item(values: dict[str, Any]) -> Event:
    try:
        return _read_event(values)
    except poison.DECODING_ERRORS as error:
        raise poison.malformed(_key(values), error) from error


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
            )
            if staged is not None
            else None
        ),
    )
