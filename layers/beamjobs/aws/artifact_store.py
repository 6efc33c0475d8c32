"""Staged artifacts' bytes in S3: stored once per content, at ``artifacts/sha256/<hex>``, with
a mark of each principal that sent them (whose declared hash alone then stands for them)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from beamjobs.aws.errors import aws_errors
from beamjobs.domain.errors import InvalidArgument, NotFound
from beamjobs.domain.limits import exceeded
from beamjobs.pipeline.artifacts import ARTIFACT_PREFIX, ArtifactLocation

# Uploads in progress; complete objects are copied to their content address, never served here.
INCOMING_PREFIX = "artifacts/incoming/"
# S3 multipart parts (at least 5 MiB except the last): the shim holds one part per upload.
PART_BYTES = 8 * 1024 * 1024
# Empty objects saying which principals sent which content (by a hash of the principal).
STAGED_BY_PREFIX = "artifacts/staged-by/"
# S3 expires an object RetentionDays after it was written (the bucket's lifecycle), however
# often it is used since. A stored artifact a new job reuses is written again (copied onto
# itself) once it is this old, so that it outlives the jobs that use it.
RENEW_AFTER_SECONDS = 86_400.0


def _staged_by_key(sha256: str, principal: str) -> str:
    return f"{STAGED_BY_PREFIX}{hashlib.sha256(principal.encode()).hexdigest()}/{sha256}"


@dataclass
class Upload:
    """One artifact's bytes on their way to S3: hashed as they arrive, sent in parts, so the
    shim's memory stays at one part whatever the artifact's size. Nothing is visible at the
    content address until the bytes are complete and their hash verified. `max_bytes` is what
    the job may still stage (its quota, less what it staged before)."""

    s3: Any
    bucket: str
    max_bytes: int
    quota_bytes: int
    size: int = 0

    def __post_init__(self) -> None:
        self._hash = hashlib.sha256()
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._key = f"{INCOMING_PREFIX}{uuid.uuid4().hex}"
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            self.abort()
            used = self.quota_bytes - self.max_bytes + self.size
            raise exceeded("artifact bytes per job", str(self.quota_bytes), f"{used} sent")
        self._hash.update(data)
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= PART_BYTES:
            self._send_part()

    def finish(self, declared: str = "") -> str:
        """Complete the upload; return its sha256. A declared hash that differs from the bytes
        received raises InvalidArgument and keeps nothing."""
        sha = self._hash.hexdigest()
        if declared and declared != sha:
            self.abort()
            raise InvalidArgument(
                f"artifact bytes have sha256 {sha}, but the artifact declares {declared}"
            )
        final = ARTIFACT_PREFIX + sha
        with aws_errors(f"artifact {sha}"):
            if self._upload_id is None:
                self.s3.put_object(Bucket=self.bucket, Key=final, Body=self._take())
                return sha
            if self._chunks:
                self._send_part()
            self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
            # A managed copy: multipart itself for objects beyond CopyObject's 5 GB.
            self.s3.copy({"Bucket": self.bucket, "Key": self._key}, self.bucket, final)
            self.s3.delete_object(Bucket=self.bucket, Key=self._key)
        return sha

    def abort(self) -> None:
        """Drop whatever was sent (safe to call more than once)."""
        self._take()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            with aws_errors(f"artifact upload {self._key}"):
                self.s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._key, UploadId=upload_id
                )

    def _send_part(self) -> None:
        with aws_errors(f"artifact upload {self._key}"):
            if self._upload_id is None:
                self._upload_id = self.s3.create_multipart_upload(
                    Bucket=self.bucket, Key=self._key
                )["UploadId"]
            number = len(self._parts) + 1
            etag = self.s3.upload_part(
                Bucket=self.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=self._take(),
            )["ETag"]
        self._parts.append({"PartNumber": number, "ETag": etag})

    def _take(self) -> bytes:
        """The buffered bytes as one block; the buffer is emptied (no second copy kept)."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return data


class ArtifactStore:
    """Artifacts in S3 by content."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.location = ArtifactLocation(bucket)

    def exists(self, sha256: str) -> bool:
        return self._has(ARTIFACT_PREFIX + sha256)

    def _has(self, key: str) -> bool:
        return self._head(key) is not None

    def _head(self, key: str) -> dict[str, Any] | None:
        """The object's HeadObject answer; None when it is not stored."""
        try:
            with aws_errors(f"artifact {key}"):
                return dict(self._s3.head_object(Bucket=self.location.bucket, Key=key))
        except NotFound:
            return None

    def staged_by(self, sha256: str, principal: str) -> bool:
        """Whether `principal` sent these bytes before (and they are still stored)."""
        return self._has(_staged_by_key(sha256, principal)) and self.exists(sha256)

    def reused(self, sha256: str, principal: str, *, now: float) -> bool:
        """Whether `principal` sent these bytes before and they are still stored: then they
        are the new job's too, renewed (written again) if older than RENEW_AFTER_SECONDS. For
        the stager (it may write artifacts); a reader asks `staged_by`."""
        if not self._has(_staged_by_key(sha256, principal)):
            return False
        key = ARTIFACT_PREFIX + sha256
        written = self._head(key)
        if written is None:
            return False
        if now - written["LastModified"].timestamp() > RENEW_AFTER_SECONDS:
            with aws_errors(f"artifact {sha256}"):
                # (A managed copy: multipart for objects beyond CopyObject's 5 GB.)
                self._s3.copy(
                    {"Bucket": self.location.bucket, "Key": key},
                    self.location.bucket,
                    key,
                    ExtraArgs={"MetadataDirective": "REPLACE"},
                )
        return True

    def mark_staged_by(self, sha256: str, principal: str) -> None:
        with aws_errors(f"artifact {sha256}"):
            self._s3.put_object(
                Bucket=self.location.bucket, Key=_staged_by_key(sha256, principal), Body=b""
            )

    def upload(self, *, max_bytes: int, quota_bytes: int) -> Upload:
        """An upload of at most `max_bytes`, what is left of a job's `quota_bytes`."""
        return Upload(self._s3, self.location.bucket, max_bytes, quota_bytes)

    def read(self, sha256: str, chunk_bytes: int = PART_BYTES) -> Iterator[bytes]:
        with aws_errors(f"artifact {sha256}"):
            body = self._s3.get_object(Bucket=self.location.bucket, Key=ARTIFACT_PREFIX + sha256)
            yield from body["Body"].iter_chunks(chunk_bytes)
