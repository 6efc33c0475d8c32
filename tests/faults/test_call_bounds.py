"""A function's call under a long throttle ends within the function's call bound
(BEAMJOBS_CALL_SECONDS), answering UNAVAILABLE, rather than being stopped mid-retry by the
function's timeout; its caller (the worker, insisting) sends it again after the throttle."""

import dataclasses
import time

import pytest

from beamjobs import runtime
from beamjobs.aws import clients
from beamjobs.domain.errors import Unavailable
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.states import JobState
from tests.faults.harness import Faults
from tests.integration.conftest import make_job
from tests.jobstates import advance


def test_a_finish_under_a_long_throttle_answers_unavailable_within_the_bound(settings):
    # Given the worker function's stores, bounded to 6 s a call, and a running job
    bounded = dataclasses.replace(settings, call_seconds=6.0)
    stores = runtime.stores(bounded)
    stores.jobs.create(make_job("j1"))
    advance(stores.jobs, "j1", JobState.STARTING, JobState.RUNNING)
    # (The outcome goes through the patient client: bounded all the same.)
    attached = [clients.client("dynamodb", bounded, budget=b) for b in ("standard", "patient")]
    faults = Faults().attach(*attached)
    try:
        # When the job's partition is throttled for a minute, its Finish answers UNAVAILABLE
        # within the bound
        faults.window("*", "throttle", seconds=60)
        started = time.monotonic()
        with pytest.raises(Unavailable):
            Jobs(stores.outcomes).finish("j1")
        assert time.monotonic() - started <= 6.0
        # Then, the throttle over, the same Finish is recorded
        faults.rules.clear()
        assert Jobs(stores.outcomes).finish("j1").state is JobState.DONE
    finally:
        faults.detach(*attached)
