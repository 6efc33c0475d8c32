"""The job store on one DynamoDB table (single-table design): item mapping and appends only.

Items of a job, all under the partition key ``job#<id>``:

- ``sk = "ev#<seq, zero-padded>"``: the job's log (beamjobs.domain.store). Each event holds its
  change and the job's snapshot after it (beamjobs.aws.dynamodb_items declares every attribute
  of both kinds of item, once). An append is a put conditional on a free slot.
- ``sk = "job"``: the job record: what never changes (name, owner, options, created, the
  staging token's hash, the worker secret), and a projection of the snapshot for listing
  (``gsi1``; ``owner``, an owner's jobs; ``state``, one state's jobs) and for the reconciler
  (``active``, only while the job is active). It sorts after every event, so one descending
  Query of two items reads the record and the log's tail together. Messages do not touch it:
  only a changed snapshot does.
- ``sk = "beat"``: when the job's worker last said it was alive. An item of its own, outside
  every index, so a heartbeat writes one small item. It sorts before every event.

Apart from every job's: counters (``counter#<name>``), and each principal's slots for active
jobs (``slots#<holder>``): one item whose map ``jobs`` holds, by job id, when each job took its
slot. Taking one is a single write conditional on the map's size, so racing Runs never hold
more slots than the limit; a retried take writes the same key again and counts once.

No transactions: each write is a single conditional item write. A projection may be lost (a
kill or throttle between the event and the record's update). Whoever reads the job sees the
tail's snapshot, but only writers repair the record (a reader's role may not write): a writer
that read it behind, with its next append or its decision to append nothing (`repair`), and
the reconciler for a job the active index still lists after it ended. Every item expires
(TTL) `item_lifetime` seconds after it was written (beamjobs.domain.jobs.item_lifetime says
why that outlives the job).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from beamjobs.aws import dynamodb_items as codec
from beamjobs.aws import malformed_items, operational_metrics
from beamjobs.aws.errors import aws_errors
from beamjobs.domain import poison
from beamjobs.domain.errors import BeamjobsError, Conflict, MalformedItem, Unavailable
from beamjobs.domain.model import (
    ACTIVE_STATES,
    EVENT_PAGE_BYTES,
    Change,
    Event,
    Job,
    event_bytes,
    unknown_job,
)
from beamjobs.domain.store import EventPage, JobPage, JobQuery, JobStore, listing_key

logger = logging.getLogger(__name__)

JOB_SK = "job"
BEAT_SK = "beat"
SLOTS_SK = "slots"
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
# Jobs a store remembers things of (whose record it read behind their log, until it appends to
# them; what their record held when last read or written): the oldest beyond this many are
# forgotten.
_JOBS_REMEMBERED = 1024


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
        # Ids of jobs whose record was read behind their log: the next append projects.
        self._behind: dict[str, None] = {}
        # What each job's record was last seen to hold (its seq, and its projected fields),
        # read or written by this store: a projection onto it writes only what differs.
        self._records: dict[str, tuple[int, dict[str, Any]]] = {}
        self._memory_lock = threading.Lock()  # (handlers share a store across threads)

    def now(self) -> float:
        return self._clock()

    def create(self, job: Job) -> None:
        # The event goes first: a record is never without a state.
        self._put_event(Change(state=job.state), job, at=job.state_time)
        record = {
            "pk": _pk(job.job_id),
            "sk": JOB_SK,
            **codec.record(job),
            **({"active": ACTIVE_PARTITION} if job.state in ACTIVE_STATES else {}),
            "gsi1pk": LIST_PARTITION,
            "gsi1sk": listing_key(job),
            "expires_at": self._expiry(),
        }
        self._put_new(record, "attribute_not_exists(pk)", f"job {job.job_id}")
        self._remember(self._records, job.job_id, (job.seq, _projected(job)))

    def get(self, job_id: str) -> Job:
        with aws_errors(f"job {job_id}"):
            page = self._db.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues=codec.to_item({":pk": _pk(job_id)}),
                ScanIndexForward=False,
                ConsistentRead=True,
                Limit=2,
            )
        found = [codec.from_item(item) for item in page.get("Items", [])]
        if not found or found[0]["sk"] != JOB_SK:
            raise unknown_job(job_id)
        record = codec.job_from_record(found[0])
        held = {**_projected(record), "active": found[0].get("active")}
        self._remember(self._records, job_id, (record.seq, held))
        if len(found) < 2:
            return record
        job = codec.with_snapshot(record, found[1])
        if codec.snapshot(job) != codec.snapshot(record):
            # The record's projection was lost or is late: answered from the log, and repaired
            # by this store's next append to the job (never by a read).
            self._remember(self._behind, job_id, None)
        return job

    def append(self, job: Job, change: Change) -> Job:
        now = round(self._clock(), 6)  # as stored, so the job answered is the job read later
        after = job.after(change, job.seq + 1, now)
        self._put_event(change, after, at=now)
        if change.state is not None and change.state is not job.state:
            operational_metrics.job_moved(after)
        if codec.snapshot(after) != codec.snapshot(job) or job.job_id in self._behind:
            self._project(after)
        return after

    def repair(self, job: Job) -> None:
        if job.job_id in self._behind:
            self._project(job)

    def event_page(self, job_id: str, after_seq: int) -> EventPage:
        events: list[Event] = []
        size = 0
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": codec.to_item(
                {":pk": _pk(job_id), ":lo": _event_sk(after_seq + 1), ":hi": EVENT_PREFIX + "~"}
            ),
            "ConsistentRead": True,
        }
        while True:
            with aws_errors(f"events of job {job_id}"):
                page = self._db.query(**query)
            for item in page.get("Items", []):
                event = codec.event_from_item(codec.from_item(item))
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
            request["ExclusiveStartKey"] = codec.to_item({**start, "gsi1sk": after})
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
                return JobPage(jobs, str(codec.from_item(last)["gsi1sk"]))
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
                Key=codec.to_item({"pk": _pk(job_id), "sk": BEAT_SK}),
                UpdateExpression="SET beat_at = :t, expires_at = :e",
                ExpressionAttributeValues=codec.to_item(
                    {":t": codec.decimal(self._clock()), ":e": self._expiry()}
                ),
            )

    def heartbeats(self, job_ids: Sequence[str]) -> dict[str, float]:
        beats: dict[str, float] = {}
        for start in range(0, len(job_ids), _BATCH_GET_KEYS):
            keys = [
                codec.to_item({"pk": _pk(job_id), "sk": BEAT_SK})
                for job_id in job_ids[start : start + _BATCH_GET_KEYS]
            ]
            request: dict[str, Any] = {
                self._table: {
                    "Keys": keys,
                    "ProjectionExpression": "pk, beat_at",
                    "ConsistentRead": True,  # the reconciler decides on it
                }
            }
            # DynamoDB may answer part of a batch (UnprocessedKeys): ask for the rest.
            while request:
                with aws_errors("heartbeats"):
                    answer = self._db.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self._table, []):
                    values = codec.from_item(item)
                    try:
                        beats[str(values["pk"])[len("job#") :]] = float(values["beat_at"])
                    except poison.DECODING_ERRORS as error:  # as if never heard of
                        malformed_items.skipped("the heartbeats", codec.item_key(values), error)
                request = answer.get("UnprocessedKeys") or {}
        return beats

    def set_metrics_ref(self, job_id: str, metrics_ref: str) -> None:
        self._update_record(job_id, f"SET {codec.METRICS_REF} = :m", {":m": metrics_ref})

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
                    Key=codec.to_item({"pk": f"counter#{counter}", "sk": "counter"}),
                    UpdateExpression=(
                        f"ADD n :one SET {WRITER} = :w, expires_at = if_not_exists(expires_at, :e)"
                    ),
                    ConditionExpression="attribute_not_exists(n) OR n < :limit",
                    ExpressionAttributeValues=codec.to_item(
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

    def take_slot(self, holder: str, job_id: str, limit: int) -> dict[str, float] | None:
        key = codec.to_item({"pk": f"slots#{holder}", "sk": SLOTS_SK})
        for _ in range(2):  # the second after the item is made
            try:
                with aws_errors(f"slots of {holder}"):
                    self._db.update_item(
                        TableName=self._table,
                        Key=key,
                        UpdateExpression="SET jobs.#job = :now",
                        ConditionExpression=(
                            "attribute_exists(jobs.#job) "
                            "OR (attribute_exists(jobs) AND size(jobs) < :limit)"
                        ),
                        ExpressionAttributeNames={"#job": job_id},
                        ExpressionAttributeValues=codec.to_item(
                            {":now": codec.decimal(self._clock()), ":limit": limit}
                        ),
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                return None
            except Conflict as conflict:
                old = _old_item(conflict.__cause__)
                if "jobs" in old:
                    return {held: float(at) for held, at in codec.from_item(old)["jobs"].items()}
            # The holder's first slot: make the item (another taker may have just made it).
            with contextlib.suppress(Conflict):
                self._put_new(
                    {"pk": f"slots#{holder}", "sk": SLOTS_SK, "jobs": {}},
                    "attribute_not_exists(pk)",
                    f"slots of {holder}",
                )
        raise Unavailable(f"slots of {holder}: the item could not be made")

    def give_back_slot(self, holder: str, job_id: str, *, taken_at: float | None = None) -> None:
        condition, values = "attribute_exists(jobs.#job)", None
        if taken_at is not None:
            condition, values = "jobs.#job = :taken", {":taken": codec.decimal(taken_at)}
        with contextlib.suppress(Conflict), aws_errors(f"slots of {holder}"):
            self._db.update_item(
                TableName=self._table,
                Key=codec.to_item({"pk": f"slots#{holder}", "sk": SLOTS_SK}),
                UpdateExpression="REMOVE jobs.#job",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#job": job_id},
                **({"ExpressionAttributeValues": codec.to_item(values)} if values else {}),
            )

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
            "ExpressionAttributeValues": codec.to_item({":p": value}),
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
        item = {
            "pk": _pk(after.job_id),
            "sk": _event_sk(after.seq),
            **codec.event_attributes(change, after, at),
            "expires_at": self._expiry(),
        }
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
                    Item=codec.to_item({**item, WRITER: writer}),
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
        the log is the truth, and a writer repairs a lost projection. Onto a record seen
        since its last change, only what differs is written, on the condition that it is still
        as seen; onto any other, the whole snapshot. (A projection's cost grows with its
        attributes, and most events change two or three.)"""
        fields = _projected(job)
        seen = self._records.pop(job.job_id, None)
        try:
            if seen is None or seen[0] >= job.seq or not self._wrote_changes(job, fields, *seen):
                with contextlib.suppress(Conflict):  # a later snapshot was projected already
                    self._write_projection(job, fields, condition="seq < :n")
                    self._remember(self._records, job.job_id, (job.seq, fields))
            self._behind.pop(job.job_id, None)
        except BeamjobsError:
            logger.warning("projecting job %s failed", job.job_id, exc_info=True)

    def _wrote_changes(
        self, job: Job, fields: dict[str, Any], seen_seq: int, seen_fields: dict[str, Any]
    ) -> bool:
        """Write the fields that differ from the record as seen (at `seen_seq`), if it is still
        so; whether it was."""
        changed = {name: value for name, value in fields.items() if seen_fields[name] != value}
        try:
            self._write_projection(job, changed, condition="seq = :was", was=seen_seq)
        except Conflict:
            return False
        self._remember(self._records, job.job_id, (job.seq, fields))
        return True

    def _remember(self, memory: dict[str, Any], job_id: str, value: Any) -> None:
        """Keep `value` for the job, forgetting the longest kept beyond _JOBS_REMEMBERED."""
        with self._memory_lock:
            memory.pop(job_id, None)
            memory[job_id] = value
            while len(memory) > _JOBS_REMEMBERED:
                del memory[next(iter(memory))]

    def _write_projection(
        self, job: Job, fields: dict[str, Any], *, condition: str, was: int | None = None
    ) -> None:
        """SET the fields that have values, REMOVE those that are None, and move the record's
        seq to the job's, if the record meets `condition`."""
        assignments = [f"#{name} = :{name}" for name, value in fields.items() if value is not None]
        removals = [f"#{name}" for name, value in fields.items() if value is None]
        values: dict[str, Any] = {f":{n}": v for n, v in fields.items() if v is not None}
        values.update({":n": job.seq, ":e": self._expiry()})
        if was is not None:
            values[":was"] = was
        update = "SET " + ", ".join([*assignments, "seq = :n", "expires_at = :e"])
        if removals:
            update += " REMOVE " + ", ".join(removals)
        self._update_record(job.job_id, update, values, condition=condition, names=list(fields))

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
                Key=codec.to_item({"pk": _pk(job_id), "sk": JOB_SK}),
                UpdateExpression=update,
                ConditionExpression=expression,
                ExpressionAttributeValues=codec.to_item(values),
                **({"ExpressionAttributeNames": {f"#{n}": n for n in names}} if names else {}),
            )


def _projected(job: Job) -> dict[str, Any]:
    """What a job's record holds of its snapshot (None: absent), `active` among it: the active
    index's key while the job is active."""
    return {
        **codec.snapshot(job),
        "active": ACTIVE_PARTITION if job.state in ACTIVE_STATES else None,
    }


def _listed_jobs(page: dict[str, Any]) -> list[Job]:
    """The jobs of a page of an index; a malformed one is skipped (it must not hide every
    job)."""
    jobs = []
    for item in page.get("Items", []):
        values = codec.from_item(item)
        try:
            jobs.append(codec.job_from_record(values))
        except MalformedItem as error:
            malformed_items.skipped("the job list", codec.item_key(values), error)
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
        "ExpressionAttributeValues": codec.to_item(values),
        "ScanIndexForward": False,
    }
    if filters:
        request["FilterExpression"] = " AND ".join(filters)
    return request, partition


def _old_item(error: BaseException | None) -> dict[str, Any]:
    """The item a failed conditional write found (asked for with ALL_OLD), typed; {} if none."""
    if not isinstance(error, ClientError):
        return {}
    return dict(error.response.get("Item", {}))


def _written_by(error: BaseException | None, writer: str) -> bool:
    """Whether a failed conditional put found the item that `writer` itself put."""
    return bool(_old_item(error).get(WRITER, {}).get("S") == writer)


def event_from_stream_image(image: dict[str, Any]) -> tuple[str, Event] | None:
    """The job id and event in a stream record's new image; None for any other item."""
    values = codec.from_item(image)
    pk, sk = str(values.get("pk", "")), str(values.get("sk", ""))
    if not pk.startswith("job#") or not sk.startswith(EVENT_PREFIX):
        return None
    return pk[len("job#") :], codec.event_from_item(values)
