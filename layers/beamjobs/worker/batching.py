"""Taking what waits in a queue in batches (the worker's messages, a mirror's upstream ones)."""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any


def gather(
    source: queue.Queue[Any] | queue.SimpleQueue[Any],
    batch: list[Any],
    *,
    limit: int,
    wait: float,
    taken: Callable[[Any], None] = lambda item: None,
) -> bool:
    """Add what waits in `source` to `batch`, up to `limit` items, waiting `wait` seconds for
    the first (`taken` is told of each); whether the queue's end (None) was reached."""
    try:
        item = source.get(timeout=wait)
    except queue.Empty:
        return False
    while item is not None:
        taken(item)
        batch.append(item)
        if len(batch) >= limit:
            return False
        try:
            item = source.get_nowait()
        except queue.Empty:
            return False
    return True
