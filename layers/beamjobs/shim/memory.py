"""The shim's memory, given back to the operating system where glibc would keep it. (Other C
libraries have no mallopt or malloc_trim: nothing is done there.)"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

# glibc's mallopt parameter: allocations at least this large are mapped on their own.
_M_MMAP_THRESHOLD = -3
_LARGE_BUFFER_BYTES = 1024 * 1024
# A refused message's buffers are freed once gRPC has let go of them: trimmed a moment later.
_TRIM_DELAY_SECONDS = 1.0

_name = ctypes.util.find_library("c")
_libc = ctypes.CDLL(_name) if _name else None
_trim_pending = threading.Lock()


def return_large_buffers_to_the_os() -> None:
    """Artifact chunks (2 MiB) and upload parts (8 MiB) pass through the shim by the hundred.
    glibc's default raises its mmap threshold after the first such buffer is freed, after which
    they come from per-thread heaps that keep the memory: a 200 MB artifact then grew the shim
    by ~70 MB even with a bounded receive window. A fixed threshold maps each large buffer
    alone and unmaps it when freed."""
    if _libc is not None and hasattr(_libc, "mallopt"):
        _libc.mallopt(_M_MMAP_THRESHOLD, _LARGE_BUFFER_BYTES)


def trim_soon() -> None:
    """Give back the heap memory freed after a message refused for its size. gRPC receives a
    message whole before any handler sees its size, in thousands of small buffers: a refused
    200 MiB message left the shim ~260 MiB larger, freed but kept by glibc's heaps.
    malloc_trim returns free pages of every heap. At most one trim is pending at a time."""
    if _libc is None or not hasattr(_libc, "malloc_trim") or not _trim_pending.acquire(False):
        return

    def trim() -> None:
        try:
            _libc.malloc_trim(0)
        finally:
            _trim_pending.release()

    timer = threading.Timer(_TRIM_DELAY_SECONDS, trim)
    timer.daemon = True
    timer.start()
