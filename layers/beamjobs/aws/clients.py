"""boto3 clients for the settings: one per service and process, with botocore's retries."""

from __future__ import annotations

import functools
import threading
from typing import Any, Literal

import boto3
from botocore.config import Config

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


@functools.cache
def client(service: str, settings: Settings, *, budget: Budget = "standard") -> Any:
    """A boto3 client for `service` with the settings' endpoint and region, made once per
    process and budget (building one loads the service model: ~0.3 s). Clients are
    thread-safe. A "patient" one retries for minutes, a "brief" one once."""
    with _session_lock:
        return _session().client(
            service,
            region_name=settings.region,
            endpoint_url=settings.endpoint_url,
            config=_CONFIGS[budget],
        )
