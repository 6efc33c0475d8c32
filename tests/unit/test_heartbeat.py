import threading

from beamjobs.errors import Unavailable
from beamjobs.states import JobState
from beamjobs.worker.heartbeat import Heartbeat


class ScriptedStore:
    """Answers heartbeats with the given states (or raises), in order."""

    def __init__(self, answers):
        self._answers = list(answers)
        self.beats = 0

    def heartbeat(self, job_id):
        self.beats += 1
        answer = self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_worker_whose_job_was_cancelled_stops_its_work():
    stopped = threading.Event()
    store = ScriptedStore([JobState.RUNNING, Unavailable("blip"), JobState.CANCELLING])
    with Heartbeat(store, "j", interval=0.01, on_stop=stopped.set):
        assert stopped.wait(5)
    assert store.beats == 3


def test_a_running_job_keeps_beating_until_the_worker_is_done():
    stopped = threading.Event()
    store = ScriptedStore([JobState.RUNNING])
    with Heartbeat(store, "j", interval=0.01, on_stop=stopped.set):
        threading.Event().wait(0.1)
    beats = store.beats
    assert beats >= 3 and not stopped.is_set()
    threading.Event().wait(0.05)
    assert store.beats == beats  # no beat after the worker is done
