"""boto3 clients for the settings, and the one place that maps AWS errors to domain errors."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from beamjobs.errors import Conflict, NotFound, Unavailable
from beamjobs.settings import Settings

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

# botocore's standard retries absorb throttling and 5xx errors, with jittered exponential
# backoff (max_attempts retries after the first attempt); a call that still fails surfaces as
# Unavailable. Not the adaptive mode: its client-side rate limiter slows every caller of a
# client once any call is throttled, so one chatty job's throttled messages would starve the
# heartbeats and outcomes that share the client.
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=64)
# For the one write that must not be lost to a passing throttle, a job's outcome once its work
# is done: botocore retries it for minutes rather than seconds (backoff capped at 20 s).
_PATIENT_CONFIG = _CLIENT_CONFIG.merge(Config(retries={"mode": "standard", "max_attempts": 15}))


_session_lock = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


@functools.cache
def client(service: str, settings: Settings, *, patient: bool = False) -> Any:
    """A boto3 client for `service` with the settings' endpoint and region, made once per
    process (building one loads the service model: ~0.3 s). Clients are thread-safe. A
    `patient` one retries for minutes."""
    with _session_lock:
        return _session().client(
            service,
            region_name=settings.region,
            endpoint_url=settings.endpoint_url,
            config=_PATIENT_CONFIG if patient else _CLIENT_CONFIG,
        )


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
