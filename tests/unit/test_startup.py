"""The end of start-up: what it made is frozen out of the collector's walks, its garbage is not."""

import gc
import weakref

import pytest

from beamjobs.startup import started


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


def test_start_up_is_frozen_and_its_garbage_collected_first(unfrozen):
    # Given a cycle start-up dropped (garbage that only a collection frees)
    dropped = _Node()
    dropped.other = _Node()
    dropped.other.other = dropped
    gone = weakref.ref(dropped)
    del dropped
    # When start-up ends
    started()
    # Then the garbage was collected, not kept for good, and what lives is frozen
    assert gone() is None
    assert gc.get_freeze_count() > 0
