"""Every bound on what one request may hold, and every quota a principal has: one owner, so the
checks, their messages and the README's "Limits and quotas" table say the same.

A request over a limit is malformed (INVALID_ARGUMENT); one over a quota is well-formed but asks
for more than its principal may have (RESOURCE_EXHAUSTED). Both name the limit and its value.
Sizes are UTF-8 bytes, as DynamoDB and S3 count them.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from beamjobs.domain.errors import ResourceExhausted

MiB = 1024 * 1024

# -- limits: what one request may hold -------------------------------------------------------

# Job ids and preparation ids: what Beamjobs mints ("<name slug>-<32 hex digits>"), or names of
# that alphabet (no separator of a key, a path or a URL; no control or bidi character).
ID_MAX_CHARS = 200
JOB_NAME_MAX_BYTES = 500
URN_MAX_BYTES = 1024
MAX_ENVIRONMENTS = 100
MAX_DEPENDENCIES = 1000  # in all of a pipeline's environments
MAX_OPTIONS = 1000
OPTIONS_MAX_BYTES = 1 * MiB  # the options Struct, as JSON
STAGED_NAME_MAX_BYTES = 255  # a file name, as file systems bound it

# Messages, per method: pipelines may be tens of megabytes; nothing else needs more than these.
PIPELINE_MESSAGE_MAX_BYTES = 256 * MiB  # Prepare (and the server's ceiling)
UNARY_MESSAGE_MAX_BYTES = 64 * 1024  # every other unary request
STAGING_MESSAGE_MAX_BYTES = 8 * MiB  # one staging response: a chunk, or a resolution
LARGE_MESSAGE_METHODS = frozenset({"Prepare"})
STAGING_METHODS = frozenset({"ReverseArtifactRetrievalService"})

# Listings (ListJobs): jobs per page, when not asked for and at most; and the page token.
LIST_PAGE_DEFAULT = 100
LIST_PAGE_MAX = 1000
PAGE_TOKEN_MAX_BYTES = 1024

# Streams: HTTP/2 streams open at once on one connection (more wait in the client).
MAX_STREAMS_PER_CONNECTION = 100

# An upstream message id is kept as its job's cursor, in every event after it.
MAX_UPSTREAM_ID_CHARS = 200

# What one job's worker may report, per minute: message batches (Say, Mirror) and metrics
# snapshots (PublishMetrics). A worker runs its users' code, so these bound what any one job
# costs the table, the bucket and every subscriber of its streams. Beamjobs' own worker sends
# a batch at most every 0.2 s and a snapshot at most every METRICS_SNAPSHOT_SECONDS.
REPORTS_PER_MINUTE = {"messages": 600, "metrics": 240}
METRICS_SNAPSHOT_SECONDS = 0.5
# How often the worker asks a running bundle for its progress (its counters so far).
PROGRESS_SECONDS = 1.0


def message_limit(method: str) -> int:
    """The largest request message (bytes) the RPC `method` (its bare name) accepts."""
    if method in LARGE_MESSAGE_METHODS:
        return PIPELINE_MESSAGE_MAX_BYTES
    if method in STAGING_METHODS:
        return STAGING_MESSAGE_MAX_BYTES
    return UNARY_MESSAGE_MAX_BYTES


# -- quotas: what one principal may have --------------------------------------------------------


@dataclass(frozen=True)
class Quotas:
    """Per principal (locally, the local user). Built from Settings; on AWS from the template's
    parameters."""

    concurrent_jobs: int = 10
    prepares_per_minute: int = 60
    artifact_bytes_per_job: int = 2 * 1024 * MiB
    max_worker_vcpu: float = 4.0
    max_worker_memory_mb: int = 16384
    # fnmatch patterns of the container images DOCKER environments may name.
    allowed_images: tuple[str, ...] = ("*",)
    # Streams open at once (job streams and staging sessions), and subscribers of the change
    # feed in all (per shim).
    streams_per_principal: int = 256
    total_subscribers: int = 10_000
    # A staging session that has sent nothing for this long ends (DEADLINE_EXCEEDED).
    staging_idle_seconds: float = 120.0

    def check_worker(self, vcpu: float, memory_mb: int) -> None:
        if vcpu > self.max_worker_vcpu:
            raise exceeded("worker vCPUs", f"{self.max_worker_vcpu:g}", f"{vcpu:g} asked")
        if memory_mb > self.max_worker_memory_mb:
            raise exceeded(
                "worker memory (MiB)", str(self.max_worker_memory_mb), f"{memory_mb} asked"
            )

    def check_images(self, images: list[str]) -> None:
        refused = [
            i for i in images if not any(fnmatch.fnmatchcase(i, p) for p in self.allowed_images)
        ]
        if refused:
            raise ResourceExhausted(
                f"quota: DOCKER images allowed are {', '.join(self.allowed_images) or 'none'}; "
                f"not {', '.join(refused)}"
            )


def exceeded(quota: str, value: str, now: str) -> ResourceExhausted:
    """The error for a request past `quota` (of `value`), saying where the principal is."""
    return ResourceExhausted(f"quota exceeded: {quota} is {value} per principal ({now})")
