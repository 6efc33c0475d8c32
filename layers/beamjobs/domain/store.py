"""The job store's interface: what its backends implement.

Writers append at "last seq + 1" and the slot must be free, so two writers never both append
after the same tail: the loser reads the tail again and decides again (beamjobs.domain.jobs, the
only place that decides). The order is total and gap-free; replay reads the log in order.

Backends only map and append: beamjobs.aws.dynamodb_store (the table) and
beamjobs.local.memory_store (the same contract in memory, for the aggregate's unit tests). The
records they keep are beamjobs.domain.model's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from beamjobs.domain.model import Change, Event, Job
from beamjobs.domain.states import JobState


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    # False when events past the last one may exist: read again after it.
    complete: bool


@dataclass(frozen=True)
class JobQuery:
    """Which jobs a listing holds (every condition must hold; empty ones hold for all)."""

    states: frozenset[JobState] = frozenset()
    name_prefix: str = ""
    # Created at or after `created_after`, and before `created_before` (seconds since the epoch).
    created_after: float | None = None
    created_before: float | None = None
    owner: str | None = None

    def admits(self, job: Job) -> bool:
        return (
            (not self.states or job.state in self.states)
            and job.job_name.startswith(self.name_prefix)
            and (self.created_after is None or job.created_at >= self.created_after)
            and (self.created_before is None or job.created_at < self.created_before)
            and (self.owner is None or job.owner == self.owner)
        )


@dataclass(frozen=True)
class JobPage:
    # Newest first.
    jobs: list[Job]
    # Where the listing goes on (pass it as `after`), or None at its end. A page may hold
    # fewer jobs than asked for and still go on: a filter reads a bounded part of the index.
    next_after: str | None


def listing_key(job: Job) -> str:
    """A job's place in every listing (newest first is descending): its creation time, then its
    id. Also what a listing resumes after."""
    return f"{job.created_at:017.6f}#{job.job_id}"


class JobStore(ABC):
    """Jobs, their logs and their heartbeats. Backends implement the abstract methods; none of
    them decides whether a change is allowed."""

    @abstractmethod
    def now(self) -> float:
        """The store's clock (every time a job records comes from it)."""

    @abstractmethod
    def create(self, job: Job) -> None:
        """Record a new job, its state as its first event. Conflict when the id exists."""

    @abstractmethod
    def get(self, job_id: str) -> Job:
        """The job as of its log's tail (read strongly). NotFound for an unknown job."""

    @abstractmethod
    def append(self, job: Job, change: Change) -> Job:
        """Append `change` as the event after `job.seq`, and return the job after it. Conflict
        when another writer appended after `job` first. A write that was applied but whose
        answer was lost, and so is retried, is recognised as this writer's own."""

    @abstractmethod
    def event_page(self, job_id: str, after_seq: int) -> EventPage:
        """Events above `after_seq`, in order: about EVENT_PAGE_BYTES of them at most."""

    @abstractmethod
    def job_page(self, query: JobQuery, limit: int, *, after: str | None = None) -> JobPage:
        """At most `limit` of the jobs `query` admits, newest first, from those listed after
        `after` (a listing_key, from the previous page's next_after). Read from an index: the
        cost of a page is bounded, whatever the number of jobs stored."""

    @abstractmethod
    def active_jobs(self) -> list[Job]:
        """Jobs in ACTIVE_STATES (as listed: a listing may lag the log briefly)."""

    @abstractmethod
    def repair(self, job: Job) -> None:
        """If this store read the job's listing behind its log (a projection was lost), bring
        it up to `job`, as just read. Only writers call it: reading never writes (a reader's
        role may not). An append repairs by itself."""

    @abstractmethod
    def beat(self, job_id: str) -> None:
        """Record that the job's worker is alive, now."""

    @abstractmethod
    def heartbeats(self, job_ids: Sequence[str]) -> dict[str, float]:
        """When each job's worker last said it was alive; jobs never heard of are absent."""

    @abstractmethod
    def set_metrics_ref(self, job_id: str, metrics_ref: str) -> None:
        """Point the job at its latest published metrics."""

    @abstractmethod
    def count(self, counter: str, limit: int, *, keep_seconds: float) -> bool:
        """Add one to `counter` (kept at least `keep_seconds`) unless it has reached `limit`;
        whether it was added to."""

    @abstractmethod
    def take_slot(self, holder: str, job_id: str, limit: int) -> dict[str, float] | None:
        """Give job `job_id` one of `holder`'s `limit` slots, stamped now, in one conditional
        write (so racing takers never hold more than `limit`). None when the job holds one
        (taken now or before: a retried take counts once); else the jobs holding them all,
        with when each took its slot."""

    @abstractmethod
    def give_back_slot(self, holder: str, job_id: str, *, taken_at: float | None = None) -> None:
        """Free the slot `job_id` holds of `holder`'s, if any (and, with `taken_at`, only if it
        was taken then: not one taken again since)."""

    def recent_jobs(self, limit: int, *, owner: str | None = None) -> list[Job]:
        """The `limit` newest jobs (of `owner` only, when given), newest first."""
        jobs: list[Job] = []
        after = None
        while len(jobs) < limit:
            page = self.job_page(JobQuery(owner=owner), limit - len(jobs), after=after)
            jobs.extend(page.jobs)
            if page.next_after is None:
                break
            after = page.next_after
        return jobs

    def events(self, job_id: str, *, after_seq: int = 0) -> list[Event]:
        """Every event above `after_seq`, in order (a whole history: for tools and tests;
        streams read page by page)."""
        events: list[Event] = []
        while True:
            page = self.event_page(job_id, after_seq + len(events))
            events.extend(page.events)
            if page.complete:
                return events
