"""A malformed item, put straight into the table (or arriving on its stream), poisons no shared
reader: the change feed, GetJobs, the reconciler and health go on serving every other job, and
the item is reported with its key."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc
from beamjobs.app.reconcile import fail_lost_jobs
from beamjobs.aws import clients
from beamjobs.aws.dynamodb_store import DynamoJobStore
from beamjobs.aws.malformed_items import METRIC, skipped
from beamjobs.domain.executor import Leases
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.domain.states import JobState
from tests.integration.conftest import Clock, make_job, running_shim
from tests.jobstates import Work, advance

# A job's record as another writer (or damage) left it: a state no Beamjobs writes, numbers
# that are not, and no pipeline.
POISONED_RECORD = {
    "pk": {"S": "job#poisoned"},
    "sk": {"S": "job"},
    "job_id": {"S": "poisoned"},
    "state": {"S": "EXPLODED"},
    "state_time": {"S": "yesterday"},
    "seq": {"S": "one"},
    "gsi1pk": {"S": "jobs"},
    "gsi1sk": {"S": "9999999999.000000#poisoned"},
    "owner": {"S": "local"},
    "active": {"S": "active"},
}
# An event (of a job no one follows) with a sequence number that is not one.
POISONED_EVENT = {
    "pk": {"S": "job#elsewhere"},
    "sk": {"S": "ev#000000000002"},
    "seq": {"S": "two"},
    "time": {"N": "1"},
}


def _put(stores, item):
    stores.jobs._db.put_item(TableName=stores.jobs._table, Item=item)


def _reported(caplog, key: str) -> bool:
    return any("malformed item" in r.getMessage() and key in r.getMessage() for r in caplog.records)


def test_get_jobs_lists_every_other_job_and_reports_the_malformed_one(
    settings, stores, executor, caplog
):
    for job_id in ("first", "second"):
        stores.jobs.create(make_job(job_id, owner="local"))
    _put(stores, POISONED_RECORD)
    with caplog.at_level(logging.ERROR), running_shim(settings) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        listed = {info.job_id for info in stub.GetJobs(api.GetJobsRequest()).job_info}
    assert listed == {"first", "second"}
    assert _reported(caplog, "job#poisoned")


def test_a_malformed_job_answers_its_own_requests_with_data_loss(settings, stores, executor):
    import grpc

    _put(stores, POISONED_RECORD)
    with running_shim(settings) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.GetState(api.GetJobStateRequest(job_id="poisoned"))
    assert error.value.code() == grpc.StatusCode.DATA_LOSS
    assert "job#poisoned" in error.value.details()


def test_the_change_feed_skips_a_malformed_record_and_its_followers_get_every_event(
    settings, stores, executor, caplog
):
    stores.jobs.create(make_job("followed"))
    stores.jobs.create(make_job("bystander"))
    seen: dict[str, list[str]] = {"followed": [], "bystander": []}
    with caplog.at_level(logging.ERROR), running_shim(settings) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)

        def follow(job_id):
            for response in stub.GetMessageStream(api.JobMessagesRequest(job_id=job_id)):
                if response.HasField("message_response"):
                    seen[job_id].append(response.message_response.message_text)

        followers = [threading.Thread(target=follow, args=(j,)) for j in seen]
        for follower in followers:
            follower.start()
        _until(lambda: shim.feed.subscriber_count == 2)
        # A message the followers can only get from the feed: once seen, the feed reads the
        # stream (it starts at LATEST, so a record put before that would never reach it).
        Jobs(stores.jobs).say("followed", [Message("JOB_MESSAGE_BASIC", "warm-up", 1.0)])
        _until(lambda: seen["followed"] == ["warm-up"])
        _put(stores, POISONED_EVENT)  # onto the stream, as the feed reads it
        _until(lambda: _reported(caplog, "ev#000000000002"))
        for job_id in seen:
            Jobs(stores.jobs).say(job_id, [Message("JOB_MESSAGE_BASIC", f"hello {job_id}", 1.0)])
            advance(stores.jobs, job_id, JobState.STARTING, JobState.RUNNING, JobState.DONE)
        for follower in followers:
            follower.join(30)
        health = health_pb2_grpc.HealthStub(shim.channel).Check(health_pb2.HealthCheckRequest())
    assert seen == {"followed": ["warm-up", "hello followed"], "bystander": ["hello bystander"]}
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_the_reconciler_settles_every_other_lost_job_and_reports_the_malformed_one(
    settings, stores, caplog
):
    clock = Clock(1000.0)
    jobs = DynamoJobStore(
        clients.client("dynamodb", settings), settings.table_name, item_lifetime=86_400, clock=clock
    )
    jobs.create(make_job("lost", created=1000.0))
    advance(jobs, "lost", JobState.STARTING, JobState.RUNNING)
    _put(stores, POISONED_RECORD)
    clock.now += 3600
    with caplog.at_level(logging.ERROR):
        settled = fail_lost_jobs(jobs, Work(), Leases(30, 900, 900))
    assert settled == {"lost": JobState.FAILED}
    assert _reported(caplog, "job#poisoned")


def test_a_skipped_item_is_counted_in_the_malformed_items_metric(monkeypatch, capsys):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    skipped("the job list", "'job#x'/'job'", ValueError("not a number"))
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if METRIC in line]
    assert line[METRIC] == [1.0]  # one count
    assert line["reader"] == "the job list"
    assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Beamjobs"


def _until(condition, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)
