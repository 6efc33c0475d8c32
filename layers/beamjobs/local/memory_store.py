"""The job store's contract in memory: the second backend, which proves the seam and lets every
rule of the job aggregate be unit-tested with no AWS at all. Thread-safe; its list is never
behind its log (AWS's listing may lag it, which the fault tests cover)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from beamjobs.domain.errors import Conflict
from beamjobs.domain.model import (
    ACTIVE_STATES,
    EVENT_PAGE_BYTES,
    Change,
    Event,
    Job,
    event_bytes,
    unknown_job,
)
from beamjobs.domain.store import EventPage, JobPage, JobQuery, JobStore, listing_key


class MemoryJobStore(JobStore):
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._logs: dict[str, list[Event]] = {}
        self._beats: dict[str, float] = {}
        self._counters: dict[str, int] = {}
        self._slots: dict[str, dict[str, float]] = {}
        # Called with the job's id before each append is applied: lets a test play a rival
        # writer that appends first.
        self.before_append: Callable[[str], None] | None = None

    def now(self) -> float:
        return self._clock()

    def create(self, job: Job) -> None:
        with self._lock:
            if job.job_id in self._jobs:
                raise Conflict(f"job {job.job_id}: the id exists")
            self._jobs[job.job_id] = job
            self._logs[job.job_id] = [Event(job.seq, job.state_time, state=job.state)]

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise unknown_job(job_id)
            return self._jobs[job_id]

    def repair(self, job: Job) -> None:
        pass  # listed from the log itself: nothing lags

    def append(self, job: Job, change: Change) -> Job:
        if self.before_append is not None:
            self.before_append(job.job_id)
        with self._lock:
            current = self._jobs.get(job.job_id)
            if current is None:
                raise unknown_job(job.job_id)
            if current.seq != job.seq:
                raise Conflict(f"job {job.job_id}: event {job.seq + 1} was written by another")
            now = self._clock()
            after = current.after(change, job.seq + 1, now)
            self._logs[job.job_id].append(
                Event(after.seq, now, change.state, change.messages, change.staged)
            )
            self._jobs[job.job_id] = after
            return after

    def event_page(self, job_id: str, after_seq: int) -> EventPage:
        with self._lock:
            if job_id not in self._logs:
                return EventPage([], complete=True)
            log = self._logs[job_id]
        events: list[Event] = []
        size = 0
        for event in log[after_seq:]:
            events.append(event)
            size += event_bytes(event)
            if size >= EVENT_PAGE_BYTES:
                return EventPage(events, complete=event is log[-1])
        return EventPage(events, complete=True)

    def job_page(self, query: JobQuery, limit: int, *, after: str | None = None) -> JobPage:
        with self._lock:
            listed = sorted(
                (job for job in self._jobs.values() if query.admits(job)),
                key=listing_key,
                reverse=True,
            )
        if after is not None:
            listed = [job for job in listed if listing_key(job) < after]
        page = listed[:limit]
        more = len(listed) > limit
        return JobPage(page, listing_key(page[-1]) if more and page else None)

    def active_jobs(self) -> list[Job]:
        with self._lock:
            return [job for job in self._jobs.values() if job.state in ACTIVE_STATES]

    def beat(self, job_id: str) -> None:
        with self._lock:
            self._beats[job_id] = self._clock()

    def heartbeats(self, job_ids: Sequence[str]) -> dict[str, float]:
        with self._lock:
            return {job_id: self._beats[job_id] for job_id in job_ids if job_id in self._beats}

    def set_metrics_ref(self, job_id: str, metrics_ref: str) -> None:
        with self._lock:
            if job_id not in self._jobs:
                raise unknown_job(job_id)
            self._jobs[job_id] = replace(self._jobs[job_id], metrics_ref=metrics_ref)

    def count(self, counter: str, limit: int, *, keep_seconds: float) -> bool:
        with self._lock:
            if self._counters.get(counter, 0) >= limit:
                return False
            self._counters[counter] = self._counters.get(counter, 0) + 1
            return True

    def take_slot(self, holder: str, job_id: str, limit: int) -> dict[str, float] | None:
        with self._lock:
            held = self._slots.setdefault(holder, {})
            if job_id not in held and len(held) >= limit:
                return dict(held)
            held[job_id] = self._clock()
            return None

    def give_back_slot(self, holder: str, job_id: str, *, taken_at: float | None = None) -> None:
        with self._lock:
            held = self._slots.get(holder, {})
            if job_id in held and taken_at in (None, held[job_id]):
                del held[job_id]
