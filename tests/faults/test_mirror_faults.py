"""A mirror under AWS's behaviour: the writes of its worker channel throttled past botocore's
retries, or applied with their answers lost. The upstream's messages are the job's once each, in
order, whatever AWS did."""

from __future__ import annotations

import pytest

from tests.faults.harness import Faults
from tests.integration.test_mirror import (  # noqa: F401 (a fixture)
    Mirroring,
    _started,
    _states,
    _texts,
    _wait,
    fresh_worker_function,
)
from tests.upstream_double import ScriptedUpstream, State

MESSAGES = [f"line {i}" for i in range(40)]


def _message_puts(body) -> bool:
    return "messages" in body.get("Item", {})


@pytest.mark.parametrize(
    ("action", "times"),
    [("throttle", 7), ("lose_response", 3), ("fail", 6)],
)
def test_upstream_messages_are_mirrored_once_in_order_whatever_aws_does(
    settings, stores, faults: Faults, action, times
):
    upstream = ScriptedUpstream()
    try:
        # Given a job running upstream, and AWS misbehaving on the puts of its messages
        secret = _started(stores, "weather")
        faults.add("PutItem", action, times=times, when=_message_puts)
        mirroring = Mirroring("weather", secret, upstream)
        _wait(lambda: upstream.state == State.RUNNING, "RUNNING upstream")

        # When the upstream job logs, then ends
        for text in MESSAGES:
            upstream.say(text)
        upstream.move(State.DONE)
        mirroring.join()
    finally:
        upstream.stop()

    # Then AWS did misbehave (a throttled call gave up, and was sent again), and every message is the job's once, in order, and it is DONE
    assert len(faults.fired) == times
    assert _texts(stores, "weather") == MESSAGES
    assert _states(stores, "weather")[-1].value == "DONE"
