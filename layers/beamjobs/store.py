"""The job store's interface: what its backends implement.

Writers append at "last seq + 1" and the slot must be free, so two writers never both append
after the same tail: the loser reads the tail again and decides again (beamjobs.jobs, the only
place that decides). The order is total and gap-free; replay reads the log in order.

Backends only map and append: beamjobs.dynamodb_store (the table) and beamjobs.memory_store
(the same contract in memory, for the aggregate's unit tests). The records they keep are
beamjobs.model's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from beamjobs.model import Change, Event, Job


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    # False when events past the last one may exist: read again after it.
    complete: bool


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
    def recent_jobs(self, limit: int, *, owner: str | None = None) -> list[Job]:
        """The `limit` newest jobs (of `owner` only, when given), newest first."""

    @abstractmethod
    def active_jobs(self) -> list[Job]:
        """Jobs in ACTIVE_STATES (as listed: a listing may lag the log briefly)."""

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

    def events(self, job_id: str, *, after_seq: int = 0) -> list[Event]:
        """Every event above `after_seq`, in order (a whole history: for tools and tests;
        streams read page by page)."""
        events: list[Event] = []
        while True:
            page = self.event_page(job_id, after_seq + len(events))
            events.extend(page.events)
            if page.complete:
                return events
