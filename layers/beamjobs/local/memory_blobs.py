"""The blob store's contract in memory (beamjobs.domain.blobs): the second backend, for unit
tests with no AWS at all. Thread-safe."""

from __future__ import annotations

import threading

from beamjobs.domain.blobs import BlobStore
from beamjobs.domain.errors import NotFound


class MemoryBlobStore(BlobStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._blobs[key] = bytes(data)

    def delete(self, key: str) -> None:
        with self._lock:
            self._blobs.pop(key, None)

    def get(self, key: str) -> bytes:
        with self._lock:
            if key not in self._blobs:
                raise NotFound(f"blob {key} not found")
            return self._blobs[key]

    def presigned_url(self, key: str, seconds: int) -> str:
        """An address naming the blob, which only this process can resolve (`get`)."""
        return f"memory:///{key}?expires={seconds}"
