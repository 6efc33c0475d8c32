"""The one place that maps AWS errors to domain errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError

from beamjobs.domain.errors import Conflict, NotFound, Unavailable

_RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "SlowDown",
    }
)
_CONFLICT_CODES = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException"})
_MISSING_CODES = frozenset({"NoSuchKey", "404"})
# A missing table or bucket is a deployment problem, not a missing job.
_UNPROVISIONED_CODES = frozenset({"ResourceNotFoundException", "NoSuchBucket"})


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Translate AWS failures inside the block into domain errors that name `what`."""
    try:
        yield
    except ClientError as error:
        code = error_code(error)
        if code in _CONFLICT_CODES:
            raise Conflict(f"{what}: {code}") from error
        if code in _MISSING_CODES:
            raise NotFound(f"{what} not found") from error
        if code in _UNPROVISIONED_CODES:
            raise Unavailable(
                f"{what}: the backing resource is not provisioned ({code})"
            ) from error
        if code in _RETRYABLE_CODES:
            raise Unavailable(f"{what}: {code}, try again") from error
        raise
    except BotoCoreError as error:
        raise Unavailable(f"{what}: {error}") from error
