"""The end of a long-running process's start-up (the shim, the embedded AWS, the fork server),
and, for a process the local server starts, its end with that server."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
import time
from collections.abc import Callable

_PARENT_POLL_SECONDS = 1.0


def started() -> None:
    """What start-up made (imported modules, AWS service models, moto's backends, Beam's
    caches) lives as long as the process: keep it out of the garbage collector's walks for
    good. A full collection walks every tracked object; over a start-up's hundreds of thousands
    it took 90 to 100 ms, a pause of every request in flight, and in a worker forked from the
    fork server it would write to (and so copy) every page the two processes share. Garbage
    is collected first, so none is kept."""
    gc.collect()
    gc.freeze()


def end_with_parent(end: Callable[[], object]) -> None:
    """Call `end` once the process that started this one is gone (one that was killed cannot
    stop us itself)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_SECONDS)
        end()

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def stop_own_group() -> None:
    """Stop this process and what it started (its process group, when it leads one: never the
    group of whoever started it by hand), as a stop of its job would."""
    if os.getpgid(0) == os.getpid():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(0, signal.SIGTERM)
    os._exit(128 + signal.SIGTERM)
