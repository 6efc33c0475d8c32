"""The blob store in S3 (beamjobs.domain.blobs): pipelines, options and metrics, content-addressed
where the content is shared (the same pipeline bytes are stored once).

Content-addressed blobs never change, so the ones a process wrote or read most recently are
kept in memory (up to CACHE_BYTES): reading back what was just written, as Prepare, staging and
its record do in turn with a pipeline, costs no request."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from beamjobs.aws.errors import aws_errors
from beamjobs.domain.blobs import BlobStore, is_content_addressed

CACHE_BYTES = 64 * 1024 * 1024


class S3BlobStore(BlobStore):
    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        with aws_errors(f"blob {key}"):
            self._s3.put_object(Bucket=self._bucket, Key=key, Body=data)
        if is_content_addressed(key):
            self._remember(key, data)

    def delete(self, key: str) -> None:
        with aws_errors(f"blob {key}"):
            self._s3.delete_object(Bucket=self._bucket, Key=key)

    def presigned_url(self, key: str, seconds: int) -> str:
        """A URL that reads this one object, for `seconds` (or less: no longer than the
        credentials that signed it are valid)."""
        return str(
            self._s3.generate_presigned_url(
                "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=seconds
            )
        )

    def get(self, key: str) -> bytes:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        with aws_errors(f"blob {key}"):
            data = bytes(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())
        if is_content_addressed(key):
            self._remember(key, data)
        return data

    def _remember(self, key: str, data: bytes) -> None:
        if len(data) > CACHE_BYTES:
            return
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return
            self._cache[key] = data
            self._cached_bytes += len(data)
            while self._cached_bytes > CACHE_BYTES:
                _, evicted = self._cache.popitem(last=False)
                self._cached_bytes -= len(evicted)
