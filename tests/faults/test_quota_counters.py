"""The Prepares-per-minute counter under AWS's behaviour: a lost response to the count that
filled the minute is still that Prepare's (not a refusal), and a throttled count refuses the
Prepare as UNAVAILABLE with nothing stored."""

import time

import grpc
import pytest

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc
from beamjobs.aws import clients
from tests.integration.conftest import pipeline_bytes, running_shim, with_quotas


def _counts(body):
    return body.get("Key", {}).get("pk", {}).get("S", "").startswith("counter#")


def _prepare(stub, padding=""):
    return stub.Prepare(
        api.PrepareJobRequest(pipeline=pipeline_bytes(padding=padding), job_name="j")
    )


def test_a_lost_response_to_the_count_that_fills_the_minute_still_admits_it(
    monkeypatch, settings, stores, executor, faults
):
    limited = with_quotas(monkeypatch, settings, executor, quota_prepares_per_minute=1)
    counting = clients.client("dynamodb", limited)  # the shim's, for these quotas
    faults.attach(counting)
    faults.add("UpdateItem", "lose_response", when=_counts)
    if time.time() % 60 > 55:  # both Prepares fall in one minute
        time.sleep(60.5 - time.time() % 60)
    try:
        with running_shim(limited) as shim:
            stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
            prepared = _prepare(stub)
            with pytest.raises(grpc.RpcError) as second:
                _prepare(stub, padding="another")
    finally:
        faults.detach(counting)
    assert faults.fired == [("UpdateItem", "lose_response")]
    assert stores.jobs.get(prepared.preparation_id)
    assert second.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_count_throttled_past_the_retries_refuses_the_prepare_and_stores_nothing(
    settings, stores, executor, faults
):
    faults.add("UpdateItem", "throttle", when=_counts, times=20)
    with running_shim(settings) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        with pytest.raises(grpc.RpcError) as refused:
            _prepare(stub)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert stores.blobs._s3.list_objects_v2(Bucket=settings.bucket_name)["KeyCount"] == 0
    assert stores.jobs.list_jobs() == []


def _takes_slots(body):
    return body.get("Key", {}).get("pk", {}).get("S", "").startswith("slots#")


def test_a_lost_response_to_a_runs_slot_counts_it_once(
    monkeypatch, settings, stores, executor, faults
):
    limited = with_quotas(monkeypatch, settings, executor, quota_concurrent_jobs=1)
    taking = clients.client("dynamodb", limited)  # the control function's, for these quotas
    faults.attach(taking)
    faults.add("UpdateItem", "lose_response", when=_takes_slots, times=2)
    try:
        with running_shim(limited) as shim:
            stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
            first, second = _prepare(stub).preparation_id, _prepare(stub, "b").preparation_id
            # The item is made on the first take, whose answer and its retry's are lost.
            assert stub.Run(api.RunJobRequest(preparation_id=first)).job_id == first
            with pytest.raises(grpc.RpcError) as refused:
                stub.Run(api.RunJobRequest(preparation_id=second))
    finally:
        faults.detach(taking)
    assert faults.fired == [("UpdateItem", "lose_response")] * 2
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "concurrent jobs is 1 per principal (1 active)" in refused.value.details()
