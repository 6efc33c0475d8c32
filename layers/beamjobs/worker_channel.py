"""The worker channel: everything a job's worker may do, and only for its own job.

A worker runs its job's code, and that code runs with the worker's credentials. So a worker
holds no access to the table or the bucket at all: it holds its job's worker secret, minted at
Prepare and handed to the job's worker alone, and reports through this channel (the worker
function), which acts on the job that the secret is for and on no other. What it reads (the
pipeline, its options, its staged artifacts) it gets as presigned URLs for exactly those
objects.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from beamjobs.artifacts import ARTIFACT_PREFIX, ArtifactLocation
from beamjobs.blobs import BlobStore
from beamjobs.errors import InvalidArgument
from beamjobs.handlers import Route
from beamjobs.jobs import Jobs
from beamjobs.model import Job, Message, job_to_json, unknown_job

# A claim's URLs are used at once (the worker fetches what it runs before running it).
URL_SECONDS = 3600
# Metrics travel inline in a Lambda payload (at most 6 MB, base64 in JSON).
MAX_METRICS_BYTES = 4 * 1024 * 1024
# The bucket keys a job's worker may have written: its metrics.
_METRICS_PREFIX = "metrics/"


def mint_worker_secret() -> str:
    return secrets.token_urlsafe(32)


def metrics_key(job_id: str) -> str:
    return f"{_METRICS_PREFIX}{job_id}"


@dataclass(frozen=True)
class Claim:
    """What a worker that claimed its job runs: the job, and where to read its inputs."""

    job: Job
    # The bucket staged artifacts are in (their URLs name it).
    bucket: str
    pipeline_url: str
    options_url: str
    artifact_urls: dict[str, str]


class WorkerChannel:
    def __init__(
        self, jobs: Jobs, outcomes: Jobs, blobs: BlobStore, artifacts: ArtifactLocation
    ) -> None:
        """`outcomes`: the same jobs through a patient client, for a job's outcome once its
        work is done, which a passing throttle must not lose."""
        self._jobs = jobs
        self._outcomes = outcomes
        self._blobs = blobs
        self._artifacts = artifacts

    def _job(self, job_id: Any, secret: Any) -> Job:
        """The job, if `secret` is its worker secret; NOT_FOUND otherwise (whether the job
        exists is not the secret holder's business)."""
        if not isinstance(job_id, str) or not isinstance(secret, str) or not secret:
            raise InvalidArgument("job_id and worker_secret are required")
        job = self._jobs.get(job_id)
        if not (job.worker_secret and hmac.compare_digest(job.worker_secret, secret)):
            raise unknown_job(job_id)
        return job

    def claim(self, job_id: Any, secret: Any) -> Claim | Job:
        """RUNNING, and what to run, when this worker claimed the job; else the job as it is
        (which must not run)."""
        known = self._job(job_id, secret)
        claimed = self._jobs.running(known.job_id, known=known)
        if claimed is None:
            return known
        job = claimed
        url = self._blobs.presigned_url
        return Claim(
            job=job,
            bucket=self._artifacts.bucket,
            pipeline_url=url(job.pipeline_ref, URL_SECONDS),
            options_url=url(job.options_ref, URL_SECONDS),
            artifact_urls={sha: url(ARTIFACT_PREFIX + sha, URL_SECONDS) for sha in job.artifacts},
        )

    def beat(self, job_id: Any, secret: Any) -> str:
        job = self._job(job_id, secret)
        return self._jobs.beat(job.job_id, known=job).value

    def say(self, job_id: Any, secret: Any, messages: Any) -> None:
        job = self._job(job_id, secret)
        if not isinstance(messages, list):
            raise InvalidArgument("messages must be a list")
        try:
            batch = [
                Message(str(m["importance"]), str(m["text"]), float(m["time"])) for m in messages
            ]
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidArgument(
                f"a message must have importance, text and time: {error}"
            ) from error
        self._jobs.say(job.job_id, batch)

    def publish_metrics(self, job_id: Any, secret: Any, metrics: Any) -> None:
        job = self._job(job_id, secret)
        try:
            data = base64.b64decode(str(metrics), validate=True)
        except binascii.Error:
            raise InvalidArgument("metrics must be base64") from None
        if len(data) > MAX_METRICS_BYTES:
            raise InvalidArgument(f"metrics of {len(data)} bytes exceed {MAX_METRICS_BYTES}")
        key = metrics_key(job.job_id)
        self._blobs.put(key, data)
        if job.metrics_ref != key:
            self._jobs.store.set_metrics_ref(job.job_id, key)

    def finish(self, job_id: Any, secret: Any) -> str:
        return self._outcomes.finish(self._job(job_id, secret).job_id).state.value

    def fail(self, job_id: Any, secret: Any, cause: Any) -> str:
        job = self._job(job_id, secret)
        return self._outcomes.fail(job.job_id, str(cause)).state.value


def routes(channel: WorkerChannel) -> dict[str, Route]:
    """The channel's calls as handler routes (JSON in, JSON out), for the worker function
    and for the local executor's own endpoint."""

    def job(call: dict[str, Any]) -> tuple[Any, Any]:
        return call["request"].get("job_id"), call["request"].get("worker_secret")

    def claim(call: dict[str, Any]) -> dict[str, Any]:
        claimed = channel.claim(*job(call))
        if not isinstance(claimed, Claim):
            return {"claimed": False, "state": claimed.state.value}
        return {
            "claimed": True,
            "job": job_to_json(claimed.job),
            "bucket": claimed.bucket,
            "pipeline_url": claimed.pipeline_url,
            "options_url": claimed.options_url,
            "artifact_urls": claimed.artifact_urls,
        }

    def beat(call: dict[str, Any]) -> dict[str, Any]:
        return {"state": channel.beat(*job(call))}

    def say(call: dict[str, Any]) -> dict[str, Any]:
        channel.say(*job(call), call["request"].get("messages"))
        return {}

    def publish_metrics(call: dict[str, Any]) -> dict[str, Any]:
        channel.publish_metrics(*job(call), call["request"].get("metrics"))
        return {}

    def finish(call: dict[str, Any]) -> dict[str, Any]:
        return {"state": channel.finish(*job(call))}

    def fail(call: dict[str, Any]) -> dict[str, Any]:
        return {"state": channel.fail(*job(call), call["request"].get("cause"))}

    return {
        "Claim": claim,
        "Beat": beat,
        "Say": say,
        "PublishMetrics": publish_metrics,
        "Finish": finish,
        "Fail": fail,
    }
