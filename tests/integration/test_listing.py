"""Job listings page through exactly what their filters admit, newest first, on both stores: the
table (through its indexes) and the in-memory store."""

from __future__ import annotations

import pytest

from beamjobs.aws import dynamodb_store
from beamjobs.domain.states import JobState
from beamjobs.domain.store import JobQuery, JobStore, listing_key
from beamjobs.local.memory_store import MemoryJobStore
from tests.integration.conftest import make_job

OWNERS = ("alice", "bob", None)
STATES = (JobState.DONE, JobState.FAILED, JobState.RUNNING, JobState.STOPPED, JobState.CANCELLED)
QUERIES = [
    JobQuery(),
    JobQuery(states=frozenset({JobState.DONE})),
    JobQuery(states=frozenset({JobState.DONE, JobState.RUNNING})),
    JobQuery(name_prefix="etl-"),
    JobQuery(name_prefix="etl-daily"),
    JobQuery(created_after=1010.0),
    JobQuery(created_before=1020.0),
    JobQuery(created_after=1005.0, created_before=1030.5),
    JobQuery(owner="alice"),
    JobQuery(owner="alice", states=frozenset({JobState.FAILED}), name_prefix="etl-"),
    JobQuery(states=frozenset({JobState.RUNNING}), name_prefix="ml", created_after=1001.0),
    JobQuery(states=frozenset({JobState.DRAINED})),
]


def _jobs():
    jobs = []
    for index in range(60):
        name = ("etl-daily", "etl-hourly", "ml-train")[index % 3]
        # Pairs share a creation time: the id breaks the tie.
        jobs.append(
            make_job(
                f"job-{index:02d}",
                created=1000.0 + index // 2,
                job_name=name,
                state=STATES[index % 5],
                owner=OWNERS[index % 3],
            )
        )
    return jobs


@pytest.fixture(params=["table", "memory"])
def store(request) -> JobStore:
    if request.param == "memory":
        return MemoryJobStore()
    return request.getfixturevalue("stores").jobs


def _page_through(store: JobStore, query: JobQuery, size: int) -> list[str]:
    listed: list[str] = []
    after = None
    for _ in range(1000):
        page = store.job_page(query, size, after=after)
        assert len(page.jobs) <= size
        listed += [job.job_id for job in page.jobs]
        if page.next_after is None:
            return listed
        after = page.next_after
    raise AssertionError("the listing never ended")


def test_every_filter_pages_through_exactly_the_jobs_it_admits_newest_first(store):
    jobs = _jobs()
    for job in jobs:
        store.create(job)
    for query in QUERIES:
        expected = [
            job.job_id for job in sorted(jobs, key=listing_key, reverse=True) if query.admits(job)
        ]
        for size in (1, 7, 100):
            assert _page_through(store, query, size) == expected, (query, size)


def test_a_rare_filter_ends_a_page_at_its_read_budget_and_goes_on(stores, monkeypatch):
    monkeypatch.setattr(dynamodb_store, "_LISTING_READ_BUDGET", 10)
    jobs = _jobs()
    for job in jobs:
        stores.jobs.create(job)
    query = JobQuery(name_prefix="ml-train", states=frozenset({JobState.DONE, JobState.FAILED}))

    first = stores.jobs.job_page(query, 100)

    assert len(first.jobs) < 100 and first.next_after is not None
    expected = [j.job_id for j in sorted(jobs, key=listing_key, reverse=True) if query.admits(j)]
    assert _page_through(stores.jobs, query, 100) == expected
