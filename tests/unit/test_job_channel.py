"""A worker's side of its channel: its heartbeat apart from its reports, and a claim and an
outcome that a long throttle (of the function, or of its job's partition) does not lose."""

import pytest

from beamjobs.domain.errors import Unavailable
from beamjobs.domain.states import JobState
from beamjobs.worker.channel import INSIST_SECONDS, JobChannel


class Answers:
    """An invoker answering UNAVAILABLE `unavailable` times, then `result` (DONE); it records
    the events it was sent."""

    def __init__(self, unavailable: int = 0, result: dict | None = None) -> None:
        self.unavailable = unavailable
        self.result = result or {"state": "DONE"}
        self.events: list[dict] = []

    def invoke(self, function: str, event: dict) -> dict:
        self.events.append(event)
        if len(self.events) <= self.unavailable:
            return {"error": {"code": "UNAVAILABLE", "message": "job x: throttled, try again"}}
        return {"result": self.result}


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _channel(reports: Answers, time: FakeTime, beats: Answers | None = None) -> JobChannel:
    return JobChannel(
        reports, "job", "secret", beats=beats, sleep=time.sleep, clock=lambda: time.now
    )


def test_an_outcome_answered_unavailable_is_the_same_call_again_until_it_is_recorded():
    # Given a channel answering UNAVAILABLE for about 90 s (its job's partition throttled)
    reports, time = Answers(unavailable=8), FakeTime()
    # When the worker records its job's outcome
    assert _channel(reports, time).finish() is JobState.DONE
    # Then it kept trying, as one call (one request id), with growing waits
    assert len(reports.events) == 9
    assert len({e["request_id"] for e in reports.events}) == 1
    assert time.slept == [1, 2, 4, 8, 16, 20, 20, 20]


def test_an_outcome_gives_up_past_its_bound():
    reports, time = Answers(unavailable=10**6), FakeTime()
    with pytest.raises(Unavailable):
        _channel(reports, time).fail("the pipeline failed")
    assert INSIST_SECONDS - 20 <= time.now <= INSIST_SECONDS


def test_a_claim_answered_unavailable_is_the_same_call_again():
    # Given a channel throttled for about a minute as the worker's task starts
    reports = Answers(unavailable=6, result={"claimed": False, "state": "CANCELLED"})
    time = FakeTime()
    # When the worker claims its job, it keeps claiming, as one call, until it is answered
    assert _channel(reports, time).claim() is JobState.CANCELLED
    assert len(reports.events) == 7
    assert len({e["request_id"] for e in reports.events}) == 1


def test_a_report_answered_unavailable_is_not_tried_again_here():
    # (Messages and metrics are retried by their forwarders, batched with what came since.)
    reports, time = Answers(unavailable=1), FakeTime()
    with pytest.raises(Unavailable):
        _channel(reports, time).publish_metrics(b"")
    assert len(reports.events) == 1 and time.slept == []


def test_the_heartbeat_goes_through_its_own_invoker():
    reports, beats, time = Answers(), Answers(), FakeTime()
    channel = _channel(reports, time, beats=beats)
    assert channel.beat() is JobState.DONE
    assert [e["rpc"] for e in beats.events] == ["Beat"]
    assert reports.events == []
