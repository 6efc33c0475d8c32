"""Quotas a principal meets through the shim: concurrent jobs and Prepares per minute, counted
in the table (so every shim and handler counts the same)."""

import time

import grpc
import pytest
from google.protobuf import struct_pb2

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc
from beamjobs.domain.errors import ResourceExhausted
from beamjobs.domain.identity import LOCAL_CALLER
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.limits import Quotas
from beamjobs.domain.states import JobState
from beamjobs.local.memory_store import MemoryJobStore
from tests.integration.conftest import pipeline_bytes, running_shim, with_quotas
from tests.jobstates import advance


def _prepare(stub) -> str:
    request = api.PrepareJobRequest(
        pipeline=pipeline_bytes(), pipeline_options=struct_pb2.Struct(), job_name="job"
    )
    return stub.Prepare(request).preparation_id


def test_a_run_past_the_concurrent_jobs_quota_waits_for_a_job_to_end(
    monkeypatch, settings, stores, executor
):
    limited = with_quotas(monkeypatch, settings, executor, quota_concurrent_jobs=2)
    with running_shim(limited) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        first, second, third = (_prepare(stub) for _ in range(3))
        for job_id in (first, second):
            stub.Run(api.RunJobRequest(preparation_id=job_id))
        with pytest.raises(grpc.RpcError) as refused:
            stub.Run(api.RunJobRequest(preparation_id=third))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "concurrent jobs is 2 per principal" in refused.value.details()
        assert stores.jobs.get(third).state is JobState.STOPPED
        # A Run retried for a job already started is answered, not refused.
        assert stub.Run(api.RunJobRequest(preparation_id=first)).job_id == first
        advance(stores.jobs, first, JobState.RUNNING, JobState.DONE)
        assert stub.Run(api.RunJobRequest(preparation_id=third)).job_id == third
    assert executor.started == [first, second, first, third]  # a retried Run starts again


def test_prepares_past_the_quota_of_a_minute_are_refused_and_store_nothing(
    monkeypatch, settings, stores, executor
):
    limited = with_quotas(monkeypatch, settings, executor, quota_prepares_per_minute=3)
    if time.time() % 60 > 55:  # the four Prepares below fall in one minute
        time.sleep(60.5 - time.time() % 60)
    with running_shim(limited) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        prepared = [_prepare(stub) for _ in range(3)]
        before = stores.blobs._s3.list_objects_v2(Bucket=settings.bucket_name)["KeyCount"]
        with pytest.raises(grpc.RpcError) as refused:
            stub.Prepare(
                api.PrepareJobRequest(pipeline=pipeline_bytes(padding="new"), job_name="job")
            )
        after = stores.blobs._s3.list_objects_v2(Bucket=settings.bucket_name)["KeyCount"]
    assert len(set(prepared)) == 3
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Prepares per minute is 3 per principal" in refused.value.details()
    assert after == before


def test_the_prepare_counter_counts_each_minute_apart():
    now = [600.0]
    store = MemoryJobStore(clock=lambda: now[0])
    jobs, quotas = Jobs(store), Quotas(prepares_per_minute=2)
    jobs.admit_prepare(LOCAL_CALLER, quotas)
    jobs.admit_prepare(LOCAL_CALLER, quotas)
    with pytest.raises(ResourceExhausted, match="Prepares per minute is 2"):
        jobs.admit_prepare(LOCAL_CALLER, quotas)
    now[0] += 60
    jobs.admit_prepare(LOCAL_CALLER, quotas)
