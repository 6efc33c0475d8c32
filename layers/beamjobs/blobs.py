"""The blob store: pipelines, options and metrics in S3, content-addressed where the content
is shared (the same pipeline bytes are stored once), referenced from DynamoDB items."""

from __future__ import annotations

import hashlib
from typing import Any

from beamjobs.aws import aws_errors


class BlobStore:
    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def put_content(self, kind: str, data: bytes) -> str:
        """Store `data` under its sha256 and return the key. Rewriting the same bytes is
        harmless, so no existence check is spent first."""
        key = f"{kind}/sha256/{hashlib.sha256(data).hexdigest()}"
        self.put(key, data)
        return key

    def put(self, key: str, data: bytes) -> None:
        with aws_errors(f"blob {key}"):
            self._s3.put_object(Bucket=self._bucket, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        with aws_errors(f"blob {key}"):
            return bytes(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())
