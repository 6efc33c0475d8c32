"""Artifacts as Beam names them (type and role URNs), and where this deployment keeps staged
ones: a staged dependency is Beam's URL artifact ``s3://<bucket>/artifacts/sha256/<hex>`` with
its sha256 (beamjobs.pipeline.dependencies). Their bytes are beamjobs.aws.artifact_store's.
This module imports no protobuf classes, so the worker (which loads Beam's own, under the same
names) uses it too.
"""

from __future__ import annotations

import re

FILE = "beam:artifact:type:file:v1"
URL = "beam:artifact:type:url:v1"
EMBEDDED = "beam:artifact:type:embedded:v1"
STAGING_TO = "beam:artifact:role:staging_to:v1"
PIP_REQUIREMENTS_FILE = "beam:artifact:role:pip_requirements_file:v1"

ARTIFACT_PREFIX = "artifacts/sha256/"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ArtifactLocation:
    """Where this deployment keeps artifacts: content hashes to URLs and back."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    def url(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{ARTIFACT_PREFIX}{sha256}"

    def sha256_at(self, url: str, declared: str) -> str | None:
        """The content hash of a URL artifact staged here (its URL and declared hash agree);
        None for any other URL."""
        prefix = f"s3://{self.bucket}/{ARTIFACT_PREFIX}"
        sha = url[len(prefix) :] if url.startswith(prefix) else ""
        return sha if _SHA256.fullmatch(sha) and sha == declared else None
