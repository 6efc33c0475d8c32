import threading

import pytest

from beamjobs import aws
from beamjobs.errors import NotFound
from beamjobs.states import JobState
from beamjobs.store import (
    MAX_MESSAGE_BYTES,
    Message,
    TransitionRejected,
    job_from_json,
    job_to_json,
)
from tests.integration.conftest import make_job


def test_a_new_job_is_stopped_with_one_state_event(stores):
    stores.jobs.create(make_job("j1"))
    job = stores.jobs.get("j1")
    assert job.state is JobState.STOPPED
    [event] = stores.jobs.events("j1")
    assert (event.seq, event.state) == (1, JobState.STOPPED)


def test_an_unknown_job_is_not_found(stores):
    with pytest.raises(NotFound):
        stores.jobs.get("nope")


def test_transitions_append_state_events_in_order(stores):
    stores.jobs.create(make_job("j1"))
    for to in (JobState.STARTING, JobState.RUNNING, JobState.DONE):
        stores.jobs.transition("j1", to)
    states = [e.state for e in stores.jobs.events("j1")]
    assert states == [JobState.STOPPED, JobState.STARTING, JobState.RUNNING, JobState.DONE]


def test_a_forbidden_transition_is_rejected_and_changes_nothing(stores):
    stores.jobs.create(make_job("j1"))
    with pytest.raises(TransitionRejected, match="STOPPED"):
        stores.jobs.transition("j1", JobState.DONE)
    assert stores.jobs.get("j1").state is JobState.STOPPED
    assert len(stores.jobs.events("j1")) == 1


def test_failed_is_final_and_keeps_its_cause(stores):
    stores.jobs.create(make_job("j1"))
    stores.jobs.transition("j1", JobState.STARTING)
    cause = Message("JOB_MESSAGE_ERROR", "ValueError: boom", 5.0)
    stores.jobs.transition("j1", JobState.FAILED, messages=[cause])
    with pytest.raises(TransitionRejected, match="final"):
        stores.jobs.transition("j1", JobState.CANCELLING)
    *_, error, failed = stores.jobs.events("j1")
    assert error.messages == (cause,)
    assert failed.state is JobState.FAILED and failed.seq == error.seq + 1


def test_concurrent_writers_leave_a_gap_free_total_order(stores):
    stores.jobs.create(make_job("j1"))

    def write(writer):
        for index in range(10):
            stores.jobs.append_messages(
                "j1", [Message("JOB_MESSAGE_BASIC", f"{writer}-{index}", 1.0)]
            )

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


def test_only_one_of_many_racing_transitions_wins(stores):
    stores.jobs.create(make_job("j1"))
    outcomes = []

    def start():
        try:
            stores.jobs.transition("j1", JobState.STARTING, only_from=[JobState.STOPPED])
            outcomes.append("won")
        except TransitionRejected:
            outcomes.append("rejected")

    threads = [threading.Thread(target=start) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["rejected"] * 19 + ["won"]
    assert [e.state for e in stores.jobs.events("j1")] == [JobState.STOPPED, JobState.STARTING]


def test_messages_longer_than_an_item_allows_are_cut_and_say_so(stores):
    stores.jobs.create(make_job("j1"))
    stores.jobs.append_messages("j1", [Message("JOB_MESSAGE_ERROR", "x" * 500_000, 1.0)])
    [message] = stores.jobs.events("j1")[-1].messages
    text = message.text
    assert len(text) < MAX_MESSAGE_BYTES + 100
    assert "500000 bytes" in text


def test_jobs_are_listed_oldest_first_across_pages(stores):
    for index in range(7):
        stores.jobs.create(make_job(f"j{index}", created=1000.0 + index))
    assert [j.job_id for j in stores.jobs.list_jobs(page_size=3)] == [f"j{i}" for i in range(7)]


def test_events_are_read_after_a_sequence_number_across_pages(stores):
    stores.jobs.create(make_job("j1"))
    for index in range(30):
        stores.jobs.append_messages("j1", [Message("JOB_MESSAGE_BASIC", str(index), 1.0)])
    tail = stores.jobs.events("j1", after_seq=20, limit=4)
    assert [e.seq for e in tail][:4] == [21, 22, 23, 24]
    assert [e.seq for e in stores.jobs.events("j1", after_seq=20)] == list(range(21, 32))


def test_many_messages_go_in_few_items_and_keep_their_order(stores):
    stores.jobs.create(make_job("j1"))
    texts = [f"{i}:" + "y" * 10_000 for i in range(100)]
    stores.jobs.append_messages("j1", [Message("JOB_MESSAGE_BASIC", t, 1.0) for t in texts])
    events = stores.jobs.events("j1")[1:]
    assert 2 <= len(events) <= 5  # each item stays far below DynamoDB's 400 KB
    assert [m.text for e in events for m in e.messages] == texts


def test_the_state_is_read_from_the_log_even_when_the_record_lags(stores, settings):
    stores.jobs.create(make_job("j1"))
    stores.jobs.transition("j1", JobState.STARTING)
    stores.jobs.append_messages("j1", [Message("JOB_MESSAGE_BASIC", "hi", 1.0)])
    # As if the projection onto the record had been lost (a writer died between its writes):
    aws.client("dynamodb", settings).update_item(
        TableName=settings.table_name,
        Key={"pk": {"S": "job#j1"}, "sk": {"S": "job"}},
        UpdateExpression="SET #s = :s, seq = :n",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"S": "STOPPED"}, ":n": {"N": "1"}},
    )
    job = stores.jobs.get("j1")
    assert (job.state, job.seq) == (JobState.STARTING, 3)


def test_a_known_tail_is_appended_after_without_reading_and_a_stale_one_is_decided_again(
    monkeypatch, stores
):
    stores.jobs.create(make_job("j1", environment_urns=("beam:env:embedded_python:v1",)))
    started = stores.jobs.transition("j1", JobState.STARTING)
    handed_over = job_from_json(job_to_json(started))
    assert handed_over == started

    reads = []
    real_get = stores.jobs.get
    monkeypatch.setattr(stores.jobs, "get", lambda job_id: reads.append(job_id) or real_get(job_id))
    running = stores.jobs.transition(
        "j1", JobState.RUNNING, only_from=[JobState.STARTING], known=handed_over
    )
    assert reads == []
    assert (running.state, running.seq, running.pipeline_ref) == (JobState.RUNNING, 3, "p")

    # Cancelled meanwhile: the stale tail loses the slot, the job is read, RUNNING is refused.
    stores.jobs.create(make_job("j2"))
    started = stores.jobs.transition("j2", JobState.STARTING)
    stores.jobs.transition("j2", JobState.CANCELLING)
    reads.clear()
    with pytest.raises(TransitionRejected, match="CANCELLING"):
        stores.jobs.transition("j2", JobState.RUNNING, only_from=[JobState.STARTING], known=started)
    assert reads == ["j2"]
    assert [e.state for e in stores.jobs.events("j2")][-1] is JobState.CANCELLING
