"""Flink's REST API as the mirror uses it (beamjobs.upstream.flink), against a scripted one: Beam's
Flink job server leaves a cancelled job running in Flink, so the mirror cancels it there."""

from __future__ import annotations

import pytest

from beamjobs.upstream.client import UpstreamError
from beamjobs.upstream.flink import FlinkRest
from tests.flink_rest_double import FlinkRestDouble
from tests.processes import free_port


@pytest.fixture
def flink():
    double = FlinkRestDouble(
        {
            "a1": ("job-1", "RUNNING"),
            "a2": ("job-1", "FINISHED"),  # an earlier run of the same name, over
            "b1": ("job-2", "RUNNING"),  # another job
        }
    )
    yield double
    double.stop()


def test_cancel_stops_only_the_unfinished_flink_jobs_of_that_name(flink):
    assert FlinkRest(flink.address).cancel("job-1") == 1
    assert flink.jobs == {
        "a1": ("job-1", "CANCELED"),
        "a2": ("job-1", "FINISHED"),
        "b1": ("job-2", "RUNNING"),
    }
    assert ("PATCH", "/jobs/a1?mode=cancel") in flink.requests


def test_a_name_flink_does_not_run_cancels_nothing(flink):
    assert FlinkRest(flink.address).cancel("job-3") == 0
    assert [method for method, _ in flink.requests] == ["GET"]


def test_an_unreachable_flink_is_unavailable():
    with pytest.raises(UpstreamError) as unreachable:
        FlinkRest(f"localhost:{free_port()}").cancel("job-1")
    assert unreachable.value.code == "UNAVAILABLE"
