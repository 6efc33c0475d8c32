"""Quotas a principal meets through the shim: concurrent jobs and Prepares per minute, counted
in the table (so every shim and handler counts the same)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

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
        Jobs(stores.jobs).running(first)
        Jobs(stores.jobs).finish(first)
        assert stub.Run(api.RunJobRequest(preparation_id=third)).job_id == third
    assert executor.started == [first, second, first, third]  # a retried Run starts again


def _end(jobs: Jobs, job_id: str, state: JobState) -> None:
    """End a started job in `state`, as its writers would."""
    if state is JobState.DONE:
        jobs.running(job_id)
        jobs.finish(job_id)
    elif state is JobState.FAILED:
        jobs.fail(job_id, "boom")
    elif state is JobState.CANCELLED:
        jobs.cancel(job_id)
        jobs.settle(job_id, "stopped")
    else:  # a streaming job's drain, ended by its worker
        advance(jobs.store, job_id, JobState.RUNNING, JobState.DRAINING)
        jobs.settle(job_id, "drained")
    assert jobs.get(job_id).state is state


def test_twelve_runs_at_once_start_at_most_the_quota_and_each_end_gives_a_slot_back(
    monkeypatch, settings, stores, executor
):
    limited = with_quotas(monkeypatch, settings, executor, quota_concurrent_jobs=2)
    with running_shim(limited) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        prepared = [_prepare(stub) for _ in range(12)]
        together = threading.Barrier(12)

        def run(job_id: str) -> grpc.StatusCode:
            together.wait()
            try:
                stub.Run(api.RunJobRequest(preparation_id=job_id))
            except grpc.RpcError as refused:
                return refused.code()
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(12) as runs:
            codes = dict(zip(prepared, runs.map(run, prepared), strict=True))
        started = [job_id for job_id, code in codes.items() if code is grpc.StatusCode.OK]
        waiting = [job_id for job_id in prepared if job_id not in started]
        assert len(started) == 2
        assert {codes[job_id] for job_id in waiting} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert all(stores.jobs.get(job_id).state is JobState.STOPPED for job_id in waiting)

        jobs = Jobs(stores.jobs)
        for state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.DRAINED):
            _end(jobs, started.pop(0), state)
            started.append(waiting.pop(0))
            stub.Run(api.RunJobRequest(preparation_id=started[-1]))
            with pytest.raises(grpc.RpcError) as refused:
                stub.Run(api.RunJobRequest(preparation_id=waiting[0]))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, state


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
