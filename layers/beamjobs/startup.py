"""The end of a long-running process's start-up (the shim, the embedded AWS, the fork server)."""

from __future__ import annotations

import gc


def started() -> None:
    """What start-up made (imported modules, AWS service models, moto's backends, Beam's
    caches) lives as long as the process: keep it out of the garbage collector's walks for
    good. A full collection walks every tracked object; over a start-up's hundreds of thousands
    it took 90 to 100 ms, a pause of every request in flight, and in a worker forked from the
    fork server it would write to (and so copy) every page the two processes share. Garbage
    is collected first, so none is kept."""
    gc.collect()
    gc.freeze()
