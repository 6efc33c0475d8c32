import threading

from beamjobs.domain.errors import Unavailable
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.states import JobState
from beamjobs.local.memory_store import MemoryJobStore
from beamjobs.worker.heartbeat import Heartbeat
from tests.jobstates import advance
from tests.unit.test_jobs import prepared


class BlinkingStore(MemoryJobStore):
    """Fails the heartbeats it is told to (by number, from 1)."""

    def __init__(self, failing: set[int]) -> None:
        super().__init__()
        self._failing = failing
        self.beats = 0

    def beat(self, job_id: str) -> None:
        self.beats += 1
        if self.beats in self._failing:
            raise Unavailable("blip")
        super().beat(job_id)


def test_a_worker_whose_job_was_cancelled_stops_its_work_despite_a_failed_beat():
    # Given a running job whose second heartbeat fails
    store = BlinkingStore(failing={2})
    prepared(store, "j")
    advance(store, "j", JobState.STARTING, JobState.RUNNING)
    stopped = threading.Event()
    with Heartbeat(Jobs(store).handle("j"), interval=0.01, on_stop=stopped.set):
        # When the job is cancelled after a few beats
        while store.beats < 3:
            threading.Event().wait(0.01)
        Jobs(store).cancel("j")
        # Then the worker is told to stop
        assert stopped.wait(5)


def test_a_running_job_keeps_beating_until_the_worker_is_done():
    store = BlinkingStore(failing=set())
    prepared(store, "j")
    advance(store, "j", JobState.STARTING, JobState.RUNNING)
    stopped = threading.Event()
    with Heartbeat(Jobs(store).handle("j"), interval=0.01, on_stop=stopped.set):
        threading.Event().wait(0.1)
    beats = store.beats
    assert beats >= 3 and not stopped.is_set()
    assert store.heartbeats(["j"])["j"] > 0
    threading.Event().wait(0.05)
    assert store.beats == beats  # no beat after the worker is done
