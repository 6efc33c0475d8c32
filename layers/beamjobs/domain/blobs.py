"""The blob store's port: pipelines, options and metrics kept by key, referenced from the job's
items. Content shared between jobs (the same pipeline bytes) is kept once, under its sha256.

Backends implement `put`, `get` and `presigned_url`: beamjobs.aws.blobs (S3) and
beamjobs.local.memory_blobs (the same contract in memory, for unit tests)."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

_CONTENT_ADDRESS = "/sha256/"


def content_key(kind: str, data: bytes) -> str:
    """Where `data` of this kind is kept: under its sha256, so the same bytes have one key."""
    return f"{kind}{_CONTENT_ADDRESS}{hashlib.sha256(data).hexdigest()}"


def is_content_addressed(key: str) -> bool:
    """Whether the blob at `key` is named by its content, so never changes."""
    return _CONTENT_ADDRESS in key


class BlobStore(ABC):
    def put_content(self, kind: str, data: bytes) -> str:
        """Store `data` under its sha256 and return the key. Rewriting the same bytes is
        harmless, so no existence check is spent first."""
        key = content_key(kind, data)
        self.put(key, data)
        return key

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The blob's bytes; NotFound when there is none at `key`."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """No blob at `key` any more (none there is no error)."""

    @abstractmethod
    def presigned_url(self, key: str, seconds: int) -> str:
        """A URL that reads this one blob, for `seconds` (or less)."""
