"""Staging tokens: what Prepare gives the preparer, and only the preparer, to stage the job's
artifacts with: ``<job id>.<secret>``. The secret is minted by the shim; only its sha256 is
stored (on the job), so neither the table nor any log holds a usable token."""

from __future__ import annotations

import hashlib
import re
import secrets

from beamjobs.domain.errors import InvalidArgument

_SEPARATOR = "."
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
SHA256 = re.compile(r"[0-9a-f]{64}")


def mint() -> str:
    """A new secret: 256 random bits."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token(job_id: str, secret: str) -> str:
    return f"{job_id}{_SEPARATOR}{secret}"


def parse(staging_token: object) -> tuple[str, str]:
    """The job id a token names and the sha256 of its secret; INVALID_ARGUMENT for anything
    that is not a token."""
    if not isinstance(staging_token, str):
        raise InvalidArgument("staging_token is required")
    job_id, _, secret = staging_token.rpartition(_SEPARATOR)
    if not job_id or not _SECRET.fullmatch(secret):
        raise InvalidArgument("staging_token is not one that Prepare gave")
    return job_id, digest(secret)
