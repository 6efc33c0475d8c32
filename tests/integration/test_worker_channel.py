"""The worker channel (the worker function, invoked with its events/ file as `sam local invoke`
would): a job's worker secret acts for that job and no other, and can do everything its job
needs."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid

import pytest
import urllib3

from beamjobs.api import pipeline_pb2
from beamjobs.app.worker_channel import SEEN_SECONDS, SeenJobs
from beamjobs.aws.dynamodb_store import DynamoJobStore
from beamjobs.domain.errors import NotFound
from beamjobs.domain.limits import REPORTS_PER_MINUTE
from beamjobs.domain.states import JobState
from beamjobs.domain.worker_secrets import (
    SECRET_AFTER_END_SECONDS,
    keep_worker_secret,
    secret_sha256,
    worker_secret_key,
)
from beamjobs.local.invoker import LocalContext
from beamjobs.pipeline.artifacts import ARTIFACT_PREFIX, FILE
from beamjobs.pipeline.dependencies import reference
from beamjobs_functions.worker.app import lambda_handler as worker
from tests.integration.conftest import EVENTS, make_job, pipeline_bytes
from tests.jobstates import advance

CLAIM = json.loads((EVENTS / "worker_claim.json").read_text())
SECRET = CLAIM["request"]["worker_secret"]
OTHER_SECRET = "x" * 43


def _invoke(rpc, job_id, secret, request_id=None, **request):
    event = {
        "rpc": rpc,
        "request_id": request_id or f"{rpc}-{job_id}-{secret[:4]}",
        "request": {"job_id": job_id, "worker_secret": secret, **request},
    }
    return worker(event, LocalContext(function_name="worker"))


@pytest.fixture
def two_jobs(stores):
    """Jobs "mine" (of the events' secret) and "theirs", both STARTING, each with an artifact
    of its own staged."""
    for job_id, secret, content in (
        ("mine", SECRET, b"my package"),
        ("theirs", OTHER_SECRET, b"x"),
    ):
        sha = stores.artifacts.upload(max_bytes=1024, quota_bytes=1024)
        sha.write(content)
        digest = sha.finish()
        pipeline = pipeline_pb2.Pipeline.FromString(pipeline_bytes())
        local = pipeline_pb2.ArtifactInformation(type_urn=FILE)
        pipeline.components.environments["py"].dependencies.append(
            reference(stores.artifacts.location, digest, local)
        )
        ref = stores.blobs.put_content("pipelines", pipeline.SerializeToString())
        options = stores.blobs.put_content("options", b'{"beam:option:job_name:v1": "n"}')
        stores.jobs.create(
            make_job(
                job_id,
                pipeline_ref=ref,
                options_ref=options,
                worker_secret_sha256=secret_sha256(secret),
                artifacts=(digest,),
            )
        )
        advance(stores.jobs, job_id, JobState.STARTING)
    return stores


ROUTES = {
    "Claim": {},
    "Beat": {},
    "Say": {"messages": [{"importance": "JOB_MESSAGE_BASIC", "text": "forged", "time": 1.0}]},
    "PublishMetrics": {"metrics": base64.b64encode(b"forged").decode()},
    "Finish": {},
    "Fail": {"cause": "forged"},
    "Attach": {"upstream_job_id": "forged"},
    "Mirror": {
        "messages": [{"id": "1", "importance": "JOB_MESSAGE_BASIC", "text": "f", "time": 1}]
    },
    "EndAsUpstream": {"state": "DONE", "cause": "forged"},
}


@pytest.mark.parametrize("rpc", list(ROUTES))
def test_a_workers_secret_is_refused_on_any_other_job(two_jobs, rpc):
    stores = two_jobs
    before = (stores.jobs.get("theirs"), stores.jobs.events("theirs"))
    answer = _invoke(rpc, "theirs", SECRET, **ROUTES[rpc])
    assert answer == {"error": {"code": "NOT_FOUND", "message": "job 'theirs' does not exist"}}
    assert (stores.jobs.get("theirs"), stores.jobs.events("theirs")) == before
    assert stores.jobs.heartbeats(["theirs"]) == {}
    # A job that does not exist answers the same, so nothing is learnt from the answer.
    assert _invoke(rpc, "nobody", SECRET, **ROUTES[rpc])["error"]["code"] == "NOT_FOUND"


def test_a_resuming_claim_with_another_jobs_secret_is_refused(two_jobs):
    stores = two_jobs
    advance(stores.jobs, "theirs", JobState.RUNNING)  # a job a mirror could resume
    before = (stores.jobs.get("theirs"), stores.jobs.events("theirs"))
    answer = _invoke("Claim", "theirs", SECRET, resume=True)
    assert answer == {"error": {"code": "NOT_FOUND", "message": "job 'theirs' does not exist"}}
    assert (stores.jobs.get("theirs"), stores.jobs.events("theirs")) == before
    assert _invoke("Claim", "theirs", OTHER_SECRET, request_id="own", resume=True)["result"][
        "claimed"
    ]


def test_a_workers_secret_does_everything_its_own_job_needs(two_jobs):
    stores = two_jobs
    http = urllib3.PoolManager()
    claim = worker(CLAIM, LocalContext(function_name="worker"))["result"]
    assert claim["claimed"] and stores.jobs.get("mine").state is JobState.RUNNING
    # Its inputs are readable by their URLs: its pipeline, options and own artifact only.
    assert http.request("GET", claim["pipeline_url"]).data == stores.blobs.get(
        stores.jobs.get("mine").pipeline_ref
    )
    assert json.loads(http.request("GET", claim["options_url"]).data) == {
        "beam:option:job_name:v1": "n"
    }
    # A few artifacts' URLs travel in the answer itself.
    assert "artifacts_url" not in claim
    [(sha, url)] = claim["artifact_urls"].items()
    assert http.request("GET", url).data == b"my package"
    assert f"{ARTIFACT_PREFIX}{sha}" in url
    # A claim sent again (its answer lost) gets the same answer: the worker still runs it.
    assert worker(CLAIM, LocalContext(function_name="worker"))["result"]["claimed"]

    assert _invoke("Beat", "mine", SECRET) == {"result": {"state": "RUNNING"}}
    _invoke("Say", "mine", SECRET, **ROUTES["Say"])
    assert [m.text for e in stores.jobs.events("mine") for m in e.messages] == ["forged"]
    # Messages sent again (the answer lost) are said once: the call finds itself on the log,
    # and the job's record was not written for them.
    record = stores.jobs.get("mine")
    _invoke("Say", "mine", SECRET, **ROUTES["Say"])
    assert [m.text for e in stores.jobs.events("mine") for m in e.messages] == ["forged"]
    assert stores.jobs.get("mine") == record
    _invoke("PublishMetrics", "mine", SECRET, **ROUTES["PublishMetrics"])
    assert stores.blobs.get(stores.jobs.get("mine").metrics_ref) == b"forged"
    assert _invoke("Finish", "mine", SECRET) == {"result": {"state": "DONE"}}
    # And "theirs" was never touched.
    assert [e.state for e in stores.jobs.events("theirs")] == [JobState.STOPPED, JobState.STARTING]


def test_reports_after_a_claim_act_on_the_job_as_last_seen_and_a_rivals_change_stands(
    two_jobs, monkeypatch
):
    stores = two_jobs
    reads = []
    read = DynamoJobStore.get
    monkeypatch.setattr(DynamoJobStore, "get", lambda self, i: reads.append(i) or read(self, i))
    # Given a claimed job, its worker's reports read nothing before they write
    worker(CLAIM, LocalContext(function_name="worker"))
    reads.clear()
    _invoke("Say", "mine", SECRET, **ROUTES["Say"])
    _invoke("PublishMetrics", "mine", SECRET, **ROUTES["PublishMetrics"])
    _invoke("PublishMetrics", "mine", SECRET, request_id="again", **ROUTES["PublishMetrics"])
    assert reads == []
    assert stores.jobs.get("mine").metrics_ref is not None
    # When a cancel wins meanwhile (a rival writer: the channel still saw the job RUNNING)
    advance(stores.jobs, "mine", JobState.CANCELLING, JobState.CANCELLED)
    # Then a beat reads, and answers it; the last messages land after it; Finish leaves it
    assert _invoke("Beat", "mine", SECRET) == {"result": {"state": "CANCELLED"}}
    _invoke("Say", "mine", SECRET, request_id="last", **ROUTES["Say"])
    assert _invoke("Finish", "mine", SECRET) == {"result": {"state": "CANCELLED"}}
    events = stores.jobs.events("mine")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.state for e in events if e.state][-2:] == [JobState.CANCELLING, JobState.CANCELLED]
    assert [m.text for m in events[-1].messages] == ["forged"]


def test_a_report_acts_on_a_job_seen_no_longer_ago_than_its_secret_outlives_it():
    assert SEEN_SECONDS < SECRET_AFTER_END_SECONDS
    clock = [0.0]
    seen = SeenJobs(clock=lambda: clock[0])
    job = make_job("mine")
    seen.saw(job)
    seen.saw(dataclasses.replace(job, seq=0))  # an older read, arriving late, does not stand
    assert seen.get("mine") == job
    clock[0] = SEEN_SECONDS - 1
    seen.saw(job)  # handed back by a report that wrote nothing: no younger for it
    clock[0] = SEEN_SECONDS + 0.1
    assert seen.get("mine") is None
    seen.saw(dataclasses.replace(job))  # read again: as young as the read
    assert seen.get("mine") == job


def test_a_workers_secret_dies_with_its_job(two_jobs, monkeypatch):
    stores = two_jobs
    keep_worker_secret(stores.blobs, "mine", SECRET)  # as Prepare keeps it
    worker(CLAIM, LocalContext(function_name="worker"))
    assert _invoke("Finish", "mine", SECRET) == {"result": {"state": "DONE"}}
    with pytest.raises(NotFound):
        stores.blobs.get(worker_secret_key("mine"))
    # A last message still lands, a moment after the end.
    assert "error" not in _invoke("Say", "mine", SECRET, request_id="late", **ROUTES["Say"])
    ended = stores.jobs.get("mine").state_time
    monkeypatch.setattr(stores.jobs, "now", lambda: ended + SECRET_AFTER_END_SECONDS + 1)
    for rpc in ROUTES:
        answer = _invoke(rpc, "mine", SECRET, request_id=f"{rpc}-dead", **ROUTES[rpc])
        assert answer["error"]["code"] == "NOT_FOUND", rpc


def test_malformed_calls_are_invalid_arguments(two_jobs):
    assert _invoke("Say", "mine", SECRET, messages="x")["error"]["code"] == "INVALID_ARGUMENT"
    assert _invoke("PublishMetrics", "mine", SECRET, metrics="@@")["error"]["code"] == (
        "INVALID_ARGUMENT"
    )
    assert _invoke("Beat", "mine", "")["error"]["code"] == "INVALID_ARGUMENT"
    # A report's id is kept on the job's log: a long or unprintable one is refused, unstored.
    before = two_jobs.jobs.events("mine")
    for request_id in ("r" * 101, "line\nbreak"):
        for rpc in ("Say", "Claim"):
            answer = _invoke(rpc, "mine", SECRET, request_id=request_id, **ROUTES[rpc])
            assert answer["error"]["code"] == "INVALID_ARGUMENT", answer
    assert two_jobs.jobs.events("mine") == before


@pytest.mark.parametrize(
    ("rpc", "kind"), [("Say", "messages"), ("Mirror", "messages"), ("PublishMetrics", "metrics")]
)
def test_a_workers_reports_past_its_rate_are_refused_and_store_nothing(
    two_jobs, monkeypatch, rpc, kind
):
    stores = two_jobs
    monkeypatch.setitem(REPORTS_PER_MINUTE, kind, 3)
    worker(CLAIM, LocalContext(function_name="worker"))
    if rpc == "Mirror":
        _invoke("Attach", "mine", SECRET, upstream_job_id="up")
    answers = [
        _invoke(rpc, "mine", SECRET, request_id=f"{rpc}-{n}", **ROUTES[rpc]) for n in range(5)
    ]
    assert ["error" in answer for answer in answers] == [False, False, False, True, True]
    assert answers[3]["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert f"may report {kind} 3 times a minute" in answers[3]["error"]["message"]
    if rpc == "Say":  # (a mirror's messages sent again are dropped as replays)
        assert len([m for e in stores.jobs.events("mine") for m in e.messages]) == 3
    # Each job has its own: the other job's worker reports as ever.
    other = _invoke(rpc, "theirs", OTHER_SECRET, request_id="other", **ROUTES[rpc])
    assert "error" not in other or other["error"]["code"] != "RESOURCE_EXHAUSTED"


def test_a_message_of_no_known_importance_is_refused_and_nothing_is_stored(two_jobs):
    stores = two_jobs
    before = stores.jobs.events("mine")
    bogus = [{"importance": "JOB_MESSAGE_BOGUS", "text": "x", "time": 1.0}]
    answer = _invoke("Say", "mine", SECRET, messages=bogus)
    assert answer["error"]["code"] == "INVALID_ARGUMENT"
    assert "not 'JOB_MESSAGE_BOGUS'" in answer["error"]["message"]
    assert stores.jobs.events("mine") == before


@pytest.mark.parametrize(
    ("rpc", "request_"),
    [
        ("Attach", {"upstream_job_id": ""}),
        ("Attach", {"upstream_job_id": "u" * 1001}),
        ("Attach", {"upstream_job_id": "u", "replacing": 7}),
        ("Mirror", {"messages": "x"}),
        ("Mirror", {"messages": [{"id": "1"}]}),
        ("Mirror", {"messages": [{**ROUTES["Mirror"]["messages"][0], "id": "9" * 201}]}),
        ("EndAsUpstream", {"state": "RUNNING", "cause": "c"}),
        ("EndAsUpstream", {"state": "NOT_A_STATE", "cause": "c"}),
    ],
)
def test_malformed_mirror_calls_are_invalid_arguments_and_store_nothing(two_jobs, rpc, request_):
    stores = two_jobs
    advance(stores.jobs, "mine", JobState.RUNNING)
    before = (stores.jobs.get("mine"), stores.jobs.events("mine"))
    assert _invoke(rpc, "mine", SECRET, **request_)["error"]["code"] == "INVALID_ARGUMENT"
    assert (stores.jobs.get("mine"), stores.jobs.events("mine")) == before


def _mine(rpc, **request):
    """A call of the job "mine"'s worker, each with a request id of its own."""
    return _invoke(rpc, "mine", SECRET, request_id=uuid.uuid4().hex, **request)


def test_a_mirror_attaches_mirrors_once_and_ends_as_its_upstream_job(two_jobs):
    stores = two_jobs
    # Given a job its mirror claimed, prepared upstream as "up-1"
    assert worker(CLAIM, LocalContext(function_name="worker"))["result"]["claimed"]
    assert _mine("Attach", upstream_job_id="up-1") == {"result": {}}
    # ... which a second mirror cannot take over
    assert _mine("Attach", upstream_job_id="up-2")["error"]["code"] == "ABORTED"

    # When upstream messages are mirrored, some of them twice (a mirror that resumed)
    def message(id_, text):
        return {"id": id_, "importance": "JOB_MESSAGE_BASIC", "text": text, "time": 1.0}

    first = [message("1", "one"), message("2", "two")]
    assert _mine("Mirror", messages=first) == {"result": {"cursor": "2"}}
    again = [message("2", "two"), message("3", "three")]
    assert _mine("Mirror", messages=again) == {"result": {"cursor": "3"}}

    # Then each is the job's once, in order; a resumed claim says where it got to
    assert [m.text for e in stores.jobs.events("mine") for m in e.messages] == [
        "one",
        "two",
        "three",
    ]
    resumed = _mine("Claim", resume=True)["result"]
    assert resumed["claimed"] and '"cursor": "3"' in resumed["job"]
    # ... and it ends as its upstream job did (a failure with the upstream's cause)
    ended = _mine("EndAsUpstream", state="FAILED", cause="upstream broke")
    assert ended == {"result": {"state": "FAILED"}}
    assert stores.jobs.events("mine")[-1].messages[0].text == "upstream broke"
    # A claim of an ended job, resumed or not, runs nothing
    assert not _mine("Claim", resume=True)["result"]["claimed"]
