"""The worker's heartbeat: proof of life for the reconciler, and the worker's way to learn that
its job was cancelled or ended by someone else (then it stops its own work)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import TracebackType

from beamjobs.domain.errors import BeamjobsError
from beamjobs.domain.states import JobState, is_terminal
from beamjobs.worker.channel import Reports

logger = logging.getLogger(__name__)
_STOPPING = frozenset({JobState.CANCELLING, JobState.DRAINING})


def stop_own_work() -> None:
    """End this worker and every SDK harness it started (they share its process group)."""
    os.killpg(os.getpgid(0), signal.SIGTERM)


class Heartbeat:
    def __init__(
        self,
        job: Reports,
        interval: float,
        on_stop: Callable[[], None] = stop_own_work,
    ) -> None:
        self._job = job
        self._interval = interval
        self._on_stop = on_stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        # The first beat comes an interval after the claim, which is itself a sign of life
        # (the reconciler counts the RUNNING state's time as one): a short job never beats.
        while not self._done.wait(self._interval):
            try:
                state = self._job.beat()
            except BeamjobsError:
                # A missed beat is not fatal; missing many is what the lease is for.
                logger.warning("heartbeat of job %s failed", self._job.job_id, exc_info=True)
            else:
                if is_terminal(state) or state in _STOPPING:
                    logger.warning("job %s is %s: stopping its work", self._job.job_id, state.value)
                    self._on_stop()
                    return
