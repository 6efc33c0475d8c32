"""The item codec: a job written as a record, and its snapshot as an event item, read back as
the same job (through DynamoDB's typed form, as stored), whatever fields it has set."""

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from beamjobs.aws import dynamodb_items as codec
from beamjobs.domain.model import Change, Job, Message, StagingLease, Upstream
from beamjobs.domain.states import JobState

_text = st.text(min_size=1, max_size=20)
# Times as stored: to the microsecond.
_times = st.integers(min_value=0, max_value=2_000_000_000_000_000).map(lambda us: us / 1e6)
_optional_time = st.none() | _times
_names = st.lists(_text, max_size=3).map(tuple)

jobs = st.builds(
    Job,
    job_id=_text,
    job_name=_text,
    state=st.sampled_from(JobState),
    state_time=_times,
    seq=st.integers(min_value=1, max_value=10**9),
    created_at=_times,
    pipeline_ref=_text,
    options_ref=_text,
    options_json=st.none() | _text,
    bounded=st.booleans(),
    environment_urns=_names,
    unstaged=_names,
    started_at=_optional_time,
    owner=st.none() | _text,
    staging_token_sha256=st.none() | _text,
    staging_lease=st.none() | st.builds(StagingLease, _text, _times),
    staging_spent=st.booleans(),
    worker_secret_sha256=st.none() | _text,
    artifacts=_names,
    engine=st.just("") | _text,
    upstream=st.none() | st.builds(Upstream, _text, st.just("") | _text),
    failure=st.none() | _text,
    last_report=st.none() | _text,
)


def _stored(values):
    return codec.from_item(codec.to_item(values))


@given(jobs)
def test_a_record_reads_back_as_the_job_it_was_written_from(job):
    # ... but for what only its events carry (its worker's last report): never projected
    assert codec.job_from_record(_stored(codec.record(job))) == replace(job, last_report=None)
    assert codec.snapshot(job) == codec.snapshot(replace(job, last_report="another"))


@given(jobs, jobs)
def test_an_event_item_carries_the_snapshot_of_the_job_after_it(job, later):
    after = replace(
        later,
        job_id=job.job_id,
        job_name=job.job_name,
        created_at=job.created_at,
        options_ref=job.options_ref,
        options_json=job.options_json,
        bounded=job.bounded,
        environment_urns=job.environment_urns,
        owner=job.owner,
        staging_token_sha256=job.staging_token_sha256,
        worker_secret_sha256=job.worker_secret_sha256,
        engine=job.engine,
        metrics_ref=job.metrics_ref,
    )
    change = Change(state=after.state, messages=(Message("JOB_MESSAGE_BASIC", "hi", 1.5),))
    event = _stored(codec.event_attributes(change, after, at=after.state_time))
    # The record as written before, with the event's snapshot: the job after the event
    assert codec.with_snapshot(job, event) == after
    assert codec.event_from_item(event).messages == change.messages
