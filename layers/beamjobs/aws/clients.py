"""boto3 clients for the settings: one per service and process, with botocore's retries."""

from __future__ import annotations

import functools
import os
import threading
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials

from beamjobs.settings import Settings

# botocore's standard retries absorb throttling and 5xx errors, with jittered exponential
# backoff (max_attempts retries after the first attempt); a call that still fails surfaces as
# Unavailable. Not the adaptive mode: its client-side rate limiter slows every caller of a
# client once any call is throttled, so one chatty job's throttled messages would starve the
# heartbeats and outcomes that share the client.
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=64)
# For the one write that must not be lost to a passing throttle, a job's outcome once its work
# is done: botocore retries it for minutes rather than seconds (backoff capped at 20 s).
_PATIENT_CONFIG = _CLIENT_CONFIG.merge(Config(retries={"mode": "standard", "max_attempts": 15}))
# For a call that is made again soon anyway, a worker's heartbeat: one retry, and no waiting
# long for an answer, so that a throttle never holds a beat back behind its retries (the next
# beat is the retry; the lease allows for missed ones).
_BRIEF_CONFIG = _CLIENT_CONFIG.merge(
    Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=5, read_timeout=15)
)
# Inside a Lambda function a call and its retries must end before the function does, or the
# function is stopped mid-retry and its caller is left in doubt (answered by the same call
# again). There, `Settings.call_seconds` bounds every client of the process, whatever its
# budget: this many attempts, each within its share of the bound after the waits between them
# (botocore's standard mode waits at most 2**i s before retry i + 1 of a throttled call).
BOUNDED_ATTEMPTS = 3


def bounded_config(call_seconds: float) -> Config:
    """A client configuration whose call, retries included, takes at most `call_seconds`."""
    per_attempt = (call_seconds - longest_waits(BOUNDED_ATTEMPTS)) / BOUNDED_ATTEMPTS
    if per_attempt <= 0:
        raise ValueError(f"{call_seconds} s leaves no time for {BOUNDED_ATTEMPTS} attempts")
    return _CLIENT_CONFIG.merge(
        Config(
            retries={"mode": "standard", "total_max_attempts": BOUNDED_ATTEMPTS},
            connect_timeout=per_attempt / 2,
            read_timeout=per_attempt / 2,
        )
    )


def longest_waits(attempts: int) -> float:
    """The longest botocore's standard mode waits in all between `attempts` attempts."""
    return float(sum(min(2**i, 20) for i in range(attempts - 1)))


# How long a client keeps trying: its botocore configuration.
Budget = Literal["brief", "standard", "patient"]
_CONFIGS: dict[str, Config] = {
    "brief": _BRIEF_CONFIG,
    "standard": _CLIENT_CONFIG,
    "patient": _PATIENT_CONFIG,
}


_session_lock = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


def _endpoint_url(service: str, settings: Settings) -> str | None:
    """AWS's order: a service's own endpoint variable (AWS_ENDPOINT_URL_<service id>, e.g. a
    local worker's queue and STS beside its channel), then the settings' endpoint."""
    service_id = _session()._session.get_service_model(service).service_id
    own = os.environ.get(f"AWS_ENDPOINT_URL_{str(service_id).upper().replace(' ', '_')}")
    return own or settings.endpoint_url


@functools.cache
def client(service: str, settings: Settings, *, budget: Budget = "standard") -> Any:
    """A boto3 client for `service` with the settings' endpoint and region, made once per
    process and budget (building one loads the service model: ~0.3 s). Clients are
    thread-safe. A "patient" one retries for minutes, a "brief" one once; with the settings'
    `call_seconds` (in a Lambda function), every one is bounded by it."""
    bounded = settings.call_seconds
    with _session_lock:
        return _session().client(
            service,
            region_name=settings.region,
            endpoint_url=_endpoint_url(service, settings),
            config=bounded_config(bounded) if bounded else _CONFIGS[budget],
        )


def credentials() -> ReadOnlyCredentials:
    """The process's AWS credentials as they are now (a task role's are refreshed by botocore
    as they near their expiry): to sign what is not a call, an identity proof."""
    found = _session().get_credentials()
    if found is None:
        raise RuntimeError("no AWS credentials found")
    return found.get_frozen_credentials()
