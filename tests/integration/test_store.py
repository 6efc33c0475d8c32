import json
import threading

import pytest

from beamjobs.aws import clients
from beamjobs.aws import dynamodb_items as codec
from beamjobs.aws.dynamodb_store import DynamoJobStore
from beamjobs.domain.errors import Conflict, NotFound
from beamjobs.domain.jobs import Jobs, start_rule
from beamjobs.domain.model import (
    EVENT_PAGE_BYTES,
    MAX_MESSAGE_BYTES,
    Change,
    Message,
    Staged,
    event_bytes,
    job_from_json,
    job_to_json,
)
from beamjobs.domain.states import JobState
from tests.integration.conftest import make_job
from tests.jobstates import advance, leased


def test_a_new_job_is_stopped_with_one_state_event(stores):
    stores.jobs.create(make_job("j1"))
    job = stores.jobs.get("j1")
    assert job.state is JobState.STOPPED
    [event] = stores.jobs.events("j1")
    assert (event.seq, event.state) == (1, JobState.STOPPED)


def test_an_unknown_job_is_not_found(stores):
    with pytest.raises(NotFound):
        stores.jobs.get("nope")


def test_appends_add_events_in_order_and_the_job_follows_its_tail(stores):
    stores.jobs.create(make_job("j1"))
    job = advance(stores.jobs, "j1", JobState.STARTING, JobState.RUNNING, JobState.DONE)
    states = [e.state for e in stores.jobs.events("j1")]
    assert states == [JobState.STOPPED, JobState.STARTING, JobState.RUNNING, JobState.DONE]
    assert stores.jobs.get("j1") == job
    assert job.started_at is not None and job.state is JobState.DONE


def test_an_append_after_a_stale_tail_is_a_conflict_and_writes_nothing(stores):
    stores.jobs.create(make_job("j1"))
    stale = stores.jobs.get("j1")
    advance(stores.jobs, "j1", JobState.STARTING)
    with pytest.raises(Conflict):
        stores.jobs.append(stale, Change(state=JobState.CANCELLED))
    assert [e.state for e in stores.jobs.events("j1")] == [JobState.STOPPED, JobState.STARTING]


def test_a_failed_event_holds_its_cause_and_its_state_together(stores):
    stores.jobs.create(make_job("j1"))
    cause = Message("JOB_MESSAGE_ERROR", "ValueError: boom", 5.0)
    advance(stores.jobs, "j1", JobState.STARTING, JobState.FAILED, messages=[cause])
    last = stores.jobs.events("j1")[-1]
    assert (last.state, last.messages) == (JobState.FAILED, (cause,))


def test_a_staging_outcome_is_an_event_and_the_record_follows_it(stores):
    stores.jobs.create(make_job("j1", unstaged=("a.whl",)))
    Jobs(stores.jobs).stage("j1", leased(stores.jobs, "j1"), "pipelines/staged", [])
    job = stores.jobs.get("j1")
    assert (job.pipeline_ref, job.unstaged, job.state) == ("pipelines/staged", (), JobState.STOPPED)
    [listed] = stores.jobs.recent_jobs(10)
    assert (listed.pipeline_ref, listed.unstaged) == ("pipelines/staged", ())
    assert stores.jobs.events("j1")[-1].staged == Staged("pipelines/staged", ())


def test_concurrent_writers_leave_a_gap_free_total_order(stores):
    stores.jobs.create(make_job("j1"))

    def write(writer):
        for index in range(10):
            Jobs(stores.jobs).say("j1", [Message("JOB_MESSAGE_BASIC", f"{writer}-{index}", 1.0)])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = stores.jobs.events("j1")
    assert [e.seq for e in events] == list(range(1, 42))
    texts = [m.text for e in events[1:] for m in e.messages]
    for writer in range(4):  # each writer's messages stay in its own order
        mine = [t for t in texts if t.startswith(f"{writer}-")]
        assert mine == [f"{writer}-{i}" for i in range(10)]


def test_only_one_of_many_racing_starts_wins(stores):
    stores.jobs.create(make_job("j1", created=stores.jobs.now()))
    outcomes = []

    def start():
        outcomes.append(Jobs(stores.jobs).apply("j1", start_rule).changed)

    threads = [threading.Thread(target=start) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 19 + [True]
    assert [e.state for e in stores.jobs.events("j1")] == [JobState.STOPPED, JobState.STARTING]


def test_messages_longer_than_an_item_allows_are_cut_and_say_so(stores):
    stores.jobs.create(make_job("j1"))
    Jobs(stores.jobs).say("j1", [Message("JOB_MESSAGE_ERROR", "x" * 500_000, 1.0)])
    [message] = stores.jobs.events("j1")[-1].messages
    text = message.text
    assert len(text) < MAX_MESSAGE_BYTES + 100
    assert "500000 bytes" in text


def test_jobs_are_listed_across_index_pages(stores):
    for index in range(250):
        stores.jobs.create(make_job(f"j{index:03}", created=1000.0 + index))
    assert [j.job_id for j in stores.jobs.list_jobs()] == [f"j{i:03}" for i in range(250)]
    assert [j.job_id for j in stores.jobs.recent_jobs(120)] == [
        f"j{i:03}" for i in range(249, 129, -1)
    ]


def test_events_are_read_after_a_sequence_number(stores):
    stores.jobs.create(make_job("j1"))
    for index in range(30):
        Jobs(stores.jobs).say("j1", [Message("JOB_MESSAGE_BASIC", str(index), 1.0)])
    assert [e.seq for e in stores.jobs.events("j1", after_seq=20)] == list(range(21, 32))


def test_many_messages_go_in_few_items_and_keep_their_order(stores):
    stores.jobs.create(make_job("j1"))
    texts = [f"{i}:" + "y" * 10_000 for i in range(100)]
    Jobs(stores.jobs).say("j1", [Message("JOB_MESSAGE_BASIC", t, 1.0) for t in texts])
    events = stores.jobs.events("j1")[1:]
    assert 2 <= len(events) <= 5  # each item stays far below DynamoDB's 400 KB
    assert [m.text for e in events for m in e.messages] == texts


def _rewind_record(settings, job_id, also=""):
    """Set the job's record back to its first event's state (STOPPED, seq 1), and `also`."""
    clients.client("dynamodb", settings).update_item(
        TableName=settings.table_name,
        Key={"pk": {"S": f"job#{job_id}"}, "sk": {"S": "job"}},
        UpdateExpression="SET #s = :s, seq = :n" + also,
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"S": "STOPPED"}, ":n": {"N": "1"}},
    )


def test_the_state_is_read_from_the_log_even_when_the_record_lags(stores, settings):
    stores.jobs.create(make_job("j1"))
    advance(stores.jobs, "j1", JobState.STARTING)
    Jobs(stores.jobs).say("j1", [Message("JOB_MESSAGE_BASIC", "hi", 1.0)])
    # As if the projection onto the record had been lost (a writer died between its writes):
    _rewind_record(settings, "j1")
    job = stores.jobs.get("j1")
    assert (job.state, job.seq) == (JobState.STARTING, 3)


def test_a_known_tail_is_appended_after_without_reading_and_a_stale_one_is_decided_again(
    monkeypatch, stores
):
    stores.jobs.create(make_job("j1", environment_urns=("beam:env:embedded_python:v1",)))
    started = advance(stores.jobs, "j1", JobState.STARTING)
    handed_over = job_from_json(job_to_json(started))
    assert handed_over == started

    reads = []
    real_get = stores.jobs.get
    monkeypatch.setattr(stores.jobs, "get", lambda job_id: reads.append(job_id) or real_get(job_id))
    running = Jobs(stores.jobs).running("j1", known=handed_over)
    assert reads == []
    assert (running.state, running.seq, running.pipeline_ref) == (JobState.RUNNING, 3, "p")

    # Cancelled meanwhile: the stale tail loses the slot, the job is read, RUNNING is refused.
    stores.jobs.create(make_job("j2"))
    started = advance(stores.jobs, "j2", JobState.STARTING)
    advance(stores.jobs, "j2", JobState.CANCELLING)
    reads.clear()
    assert Jobs(stores.jobs).running("j2", known=started) is None
    assert reads == ["j2"]
    assert [e.state for e in stores.jobs.events("j2")][-1] is JobState.CANCELLING


def test_a_catch_up_reads_one_page_of_about_a_megabyte_at_a_time(stores):
    # Given a job with 12 MB of messages (the embedded AWS pages a Query at 1 MB, as DynamoDB)
    stores.jobs.create(make_job("chatty"))
    text = "m" * (MAX_MESSAGE_BYTES - 100)
    for _ in range(4):
        Jobs(stores.jobs).say("chatty", [Message("JOB_MESSAGE_BASIC", text, 1.0)] * 30)
    # When a stream catches up page by page
    pages, after = [], 0
    while True:
        page = stores.jobs.event_page("chatty", after)
        pages.append(sum(event_bytes(e) for e in page.events))
        after = page.events[-1].seq if page.events else after
        if page.complete:
            break
    # Then each page holds about a megabyte (one Query page past the bound at most), and
    # together they hold every message
    assert len(pages) >= 6
    assert max(pages) <= EVENT_PAGE_BYTES + 1024 * 1024
    assert sum(pages) == 120 * len(text)
    assert [e.seq for e in stores.jobs.events("chatty")] == list(range(1, after + 1))


def _metrics(capsys, name: str) -> list[dict]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    return [line for line in lines if name in line]


def test_each_stored_move_to_running_or_an_end_is_one_emf_metric(stores, monkeypatch, capsys):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    stores.jobs.create(make_job("j1"))
    advance(stores.jobs, "j1", JobState.STARTING, JobState.RUNNING)
    job = stores.jobs.get("j1")
    out = capsys.readouterr().out
    [running] = [json.loads(line) for line in out.splitlines() if "RunToRunning" in line]
    assert running["RunToRunning"] == [pytest.approx((job.state_time - job.started_at) * 1000)]
    assert running["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Beamjobs"

    stale = stores.jobs.get("j1")
    advance(stores.jobs, "j1", JobState.FAILED)
    with pytest.raises(Conflict):  # a rival's write of the same move counts nothing
        stores.jobs.append(stale, Change(state=JobState.FAILED))
    stores.jobs.append(
        stores.jobs.get("j1"), Change(messages=(Message("JOB_MESSAGE_BASIC", "x", 1.0),))
    )

    [ended] = _metrics(capsys, "JobsEnded")
    assert (ended["JobsEnded"], ended["state"]) == ([1.0], "FAILED")
    assert ended["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["state"]]


def test_no_emf_metric_is_printed_where_metrics_are_disabled(stores, monkeypatch, capsys):
    # As `make run` sets it: its output is the server's log, not CloudWatch's input.
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    stores.jobs.create(make_job("j1"))
    advance(stores.jobs, "j1", JobState.STARTING, JobState.RUNNING, JobState.DONE)
    assert stores.jobs.get("j1").state is JobState.DONE
    assert '"_aws"' not in capsys.readouterr().out


def _record_snapshot(settings, job_id):
    """The job's record as stored: its snapshot, seq and whether it is in the active index."""
    item = clients.client("dynamodb", settings).get_item(
        TableName=settings.table_name, Key={"pk": {"S": f"job#{job_id}"}, "sk": {"S": "job"}}
    )["Item"]
    record = codec.job_from_record(codec.from_item(item))
    return codec.snapshot(record), record.seq, "active" in item


def test_a_projection_writes_what_differs_from_the_record_as_seen_or_else_the_whole_snapshot(
    monkeypatch, stores, settings
):
    stores.jobs.create(make_job("j1"))
    started = advance(stores.jobs, "j1", JobState.STARTING)
    assert _record_snapshot(settings, "j1") == (codec.snapshot(started), 2, True)
    updates = []
    real_update = stores.jobs._db.update_item
    monkeypatch.setattr(
        stores.jobs._db,
        "update_item",
        lambda **call: updates.append(call["UpdateExpression"]) or real_update(**call),
    )

    # Messages move the log, not the record; a change of state after them writes the state
    # and its time alone, onto the record as this store last wrote it.
    said = stores.jobs.append(started, Change(messages=(Message("JOB_MESSAGE_BASIC", "hi", 1.0),)))
    running = stores.jobs.append(said, Change(state=JobState.RUNNING))
    assert updates == ["SET #state = :state, #state_time = :state_time, seq = :n, expires_at = :e"]
    assert _record_snapshot(settings, "j1") == (codec.snapshot(running), 4, True)

    # Another store (on the same client), which has only read the job, writes what differs
    # from the record it read.
    other = DynamoJobStore(
        stores.jobs._db, settings.table_name, item_lifetime=stores.jobs._lifetime
    )
    updates.clear()
    cancelling = other.append(other.get("j1"), Change(state=JobState.CANCELLING))
    assert updates == ["SET #state = :state, #state_time = :state_time, seq = :n, expires_at = :e"]

    # A record no longer as seen (its projection rewritten meanwhile, as by a rival writer
    # whose later events were then lost): the whole snapshot is written.
    _rewind_record(settings, "j1", " REMOVE active")
    updates.clear()
    cancelled = other.append(cancelling, Change(state=JobState.CANCELLED))
    assert len(updates) == 2 and "#pipeline_ref" in updates[1]
    assert _record_snapshot(settings, "j1") == (codec.snapshot(cancelled), 6, False)
