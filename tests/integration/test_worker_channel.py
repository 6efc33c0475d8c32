"""The worker channel (the worker function, invoked with its events/ file as `sam local invoke`
would): a job's worker secret acts for that job and no other, and can do everything its job
needs."""

from __future__ import annotations

import base64
import json

import pytest
import urllib3

from beamjobs.api import pipeline_pb2
from beamjobs.artifacts import ARTIFACT_PREFIX, FILE
from beamjobs.dependencies import reference
from beamjobs.shim.invoker import LocalContext
from beamjobs.states import JobState
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
                worker_secret=secret,
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
    [(sha, url)] = claim["artifact_urls"].items()
    assert http.request("GET", url).data == b"my package"
    assert f"{ARTIFACT_PREFIX}{sha}" in url
    # A claim sent again (its answer lost) gets the same answer: the worker still runs it.
    assert worker(CLAIM, LocalContext(function_name="worker"))["result"]["claimed"]

    assert _invoke("Beat", "mine", SECRET) == {"result": {"state": "RUNNING"}}
    _invoke("Say", "mine", SECRET, **ROUTES["Say"])
    assert [m.text for e in stores.jobs.events("mine") for m in e.messages] == ["forged"]
    _invoke("PublishMetrics", "mine", SECRET, **ROUTES["PublishMetrics"])
    assert stores.blobs.get(stores.jobs.get("mine").metrics_ref) == b"forged"
    assert _invoke("Finish", "mine", SECRET) == {"result": {"state": "DONE"}}
    # And "theirs" was never touched.
    assert [e.state for e in stores.jobs.events("theirs")] == [JobState.STOPPED, JobState.STARTING]


def test_malformed_calls_are_invalid_arguments(two_jobs):
    assert _invoke("Say", "mine", SECRET, messages="x")["error"]["code"] == "INVALID_ARGUMENT"
    assert _invoke("PublishMetrics", "mine", SECRET, metrics="@@")["error"]["code"] == (
        "INVALID_ARGUMENT"
    )
    assert _invoke("Beat", "mine", "")["error"]["code"] == "INVALID_ARGUMENT"
