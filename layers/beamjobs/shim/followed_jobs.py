"""The jobs this shim follows, as the change feed last saw them: what GetState answers without a
read, when the feed is known to be as fresh as a read (ChangeFeed.current).

A job enters when the shim reads it (a stream opened on it) and is kept up to date by every
stream record of its log that the feed reads: each event item holds the job's snapshot after
it. Whatever the feed may have missed (an interruption, an expired iterator, a skipped record)
forgets every job, so an answer from here is never behind one the table would give. The newest
MAX_FOLLOWED jobs are kept."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from beamjobs.aws import dynamodb_items as codec
from beamjobs.domain.errors import MalformedItem
from beamjobs.domain.model import Job

# A job is a few hundred bytes to a few KB in memory.
MAX_FOLLOWED = 4096


class FollowedJobs:
    """Only the event loop's thread touches it."""

    def __init__(self, capacity: int = MAX_FOLLOWED) -> None:
        self._capacity = capacity
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def remember(self, job: Job) -> None:
        """A job as just read from the table (a newer one known already stands)."""
        known = self._jobs.get(job.job_id)
        if known is None or known.seq < job.seq:
            self._keep(job)

    def saw(self, job_id: str, image: dict[str, Any]) -> None:
        """An event item of a followed job's log, its stream record's new image."""
        known = self._jobs.get(job_id)
        if known is None:
            return
        try:
            values = codec.from_item(image)
            if int(values["seq"]) <= known.seq:
                return
            self._keep(codec.with_snapshot(known, values))
        except (KeyError, TypeError, ValueError, MalformedItem):
            self.forget(job_id)  # answered by a read again, which says what is wrong with it

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def forget_all(self) -> None:
        self._jobs.clear()

    def _keep(self, job: Job) -> None:
        self._jobs[job.job_id] = job
        self._jobs.move_to_end(job.job_id)
        while len(self._jobs) > self._capacity:
            self._jobs.popitem(last=False)
