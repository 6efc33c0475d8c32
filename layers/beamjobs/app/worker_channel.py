"""The worker channel: everything a job's worker may do, and only for its own job.

A worker runs its job's code, and that code runs with the worker's credentials. A mirror (the
worker of a job on an upstream engine, beamjobs.upstream.mirror) reports through the same channel:
where its job runs upstream (Attach), the upstream's messages (Mirror) and how it ended
(EndAsUpstream). So a worker
holds no access to the table or the bucket at all: it holds its job's worker secret, minted at
Prepare and handed to the job's worker alone, and reports through this channel (the worker
function), which acts on the job that the secret is for and on no other. The job keeps only the
secret's sha256 (beamjobs.domain.worker_secrets says where the secret is). What it reads (the
pipeline, its options, its staged artifacts) it gets as presigned URLs for exactly those
objects.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from beamjobs.app.handlers import Route
from beamjobs.domain.blobs import BlobStore
from beamjobs.domain.errors import BeamjobsError, InvalidArgument
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.limits import MAX_UPSTREAM_ID_CHARS
from beamjobs.domain.model import ACTIVE_STATES, IMPORTANCES, Job, Message, job_to_json, unknown_job
from beamjobs.domain.states import JobState, is_terminal
from beamjobs.domain.worker_secrets import (
    SECRET_AFTER_END_SECONDS,
    forget_worker_secret,
    secret_sha256,
)
from beamjobs.pipeline.artifacts import ARTIFACT_PREFIX, ArtifactLocation

logger = logging.getLogger(__name__)

# A claim's URLs are used at once (the worker fetches what it runs before running it).
URL_SECONDS = 3600
# Metrics travel inline in a Lambda payload (at most 6 MB, base64 in JSON).
MAX_METRICS_BYTES = 4 * 1024 * 1024
# The bucket keys a job's worker may have written: its metrics.
_METRICS_PREFIX = "metrics/"
# A report's id (its call's request id) is kept on the job's events: bounded.
MAX_REPORT_ID_CHARS = 100


# Where a claim's artifact URLs are kept (Claim.artifacts_url), by their content, when there
# are more than travel in the answer itself (a presigned URL is about 1.5 KB).
_CLAIMS = "claims"
INLINE_ARTIFACT_URLS = 16


# A job as the channel last read or wrote it answers the reports that follow for this long (a
# worker's Say and PublishMetrics each read it before). Below SECRET_AFTER_END_SECONDS:
# a job seen no longer ago than that cannot have ended longer ago, so no secret outlives its
# time through it.
SEEN_SECONDS = 30.0
SEEN_JOBS = 1024


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
    # Each artifact's sha256 and the URL that reads it: in the answer for a few, else as a JSON
    # object read by `artifacts_url`. A job's hundreds of jars (a Java pipeline stages its whole
    # classpath) would make the answer, and its idempotency record, pass DynamoDB's 400 KB.
    artifact_urls: dict[str, str] | None
    artifacts_url: str | None


class SeenJobs:
    """Jobs as the channel last read or wrote them, for at most SEEN_SECONDS each (the most
    recently used SEEN_JOBS of them). A report may act on one unread: what it appends is
    appended on the condition that the job is still as seen (else the job is read and decided
    on again, beamjobs.domain.jobs.Jobs.apply), and a worker secret never changes. A job's
    state is never answered from here (a worker learns of a cancel from Beat, which reads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._jobs: OrderedDict[str, tuple[float, Job]] = OrderedDict()
        self._lock = threading.Lock()  # the local executor's workers call from many threads

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            seen = self._jobs.get(job_id)
            if seen is None or self._clock() - seen[0] > SEEN_SECONDS:
                return None
            self._jobs.move_to_end(job_id)
            return seen[1]

    def saw(self, job: Job) -> None:
        """`job` was just read, or is what a write left: it stands unless a later one does. The
        job held handed back (a report that wrote nothing) is no news, and ages on."""
        with self._lock:
            seen = self._jobs.get(job.job_id)
            if seen is not None and (seen[1].seq > job.seq or seen[1] is job):
                return
            self._jobs[job.job_id] = (self._clock(), job)
            self._jobs.move_to_end(job.job_id)
            while len(self._jobs) > SEEN_JOBS:
                self._jobs.popitem(last=False)

    def amend(self, job_id: str, **fields: Any) -> None:
        """The record of a job seen changed beside its events (its seq stands): as seen then,
        with these fields, and no younger."""
        with self._lock:
            seen = self._jobs.get(job_id)
            if seen is not None:
                self._jobs[job_id] = (seen[0], dataclasses.replace(seen[1], **fields))


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
        self._seen = SeenJobs()

    def _job(self, job_id: Any, secret: Any, *, read: bool = False) -> Job:
        """The job, if `secret` is its worker secret; NOT_FOUND otherwise (whether the job
        exists is not the secret holder's business). As last seen, unless told to `read` it."""
        if not isinstance(job_id, str) or not isinstance(secret, str) or not secret:
            raise InvalidArgument("job_id and worker_secret are required")
        job = None if read else self._seen.get(job_id)
        if job is None:
            job = self._jobs.get(job_id)
            self._seen.saw(job)
        expected = job.worker_secret_sha256
        if not (expected and hmac.compare_digest(expected, secret_sha256(secret))):
            raise unknown_job(job_id)
        if is_terminal(job.state) and self._jobs.now() - job.state_time > SECRET_AFTER_END_SECONDS:
            raise unknown_job(job_id)  # its secret died with it
        return job

    def claim(
        self, job_id: Any, secret: Any, *, resume: bool = False, report: str | None = None
    ) -> Claim | Job:
        """RUNNING, and what to run, when this worker claimed the job (with this `report`,
        sent again or not); else the job as it is (which must not run). A mirror that
        `resume`s (restarted after a crash) gets its active job's claim again, with how far it
        had mirrored."""
        # Read: a job cancelled since it was last seen must not be claimed.
        known = self._job(job_id, secret, read=True)
        claimed = self._jobs.running(known.job_id, known=known, claim=_report_id(report))
        if claimed is None and resume:
            current = self._jobs.get(known.job_id)
            claimed = current if current.state in ACTIVE_STATES else None
        if claimed is None:
            return known
        self._seen.saw(claimed)
        job = claimed
        url = self._blobs.presigned_url
        artifact_urls = {sha: url(ARTIFACT_PREFIX + sha, URL_SECONDS) for sha in job.artifacts}
        inline = len(artifact_urls) <= INLINE_ARTIFACT_URLS
        return Claim(
            job=job,
            bucket=self._artifacts.bucket,
            pipeline_url=url(job.pipeline_ref, URL_SECONDS),
            options_url=url(job.options_ref, URL_SECONDS),
            artifact_urls=artifact_urls if inline else None,
            artifacts_url=None
            if inline
            else url(
                self._blobs.put_content(_CLAIMS, json.dumps(artifact_urls).encode()), URL_SECONDS
            ),
        )

    def beat(self, job_id: Any, secret: Any) -> str:
        job = self._job(job_id, secret, read=True)  # its state is the answer
        return self._jobs.beat(job.job_id, known=job).value

    def say(self, job_id: Any, secret: Any, messages: Any, *, report: str | None = None) -> None:
        """Append the messages, once for this `report` however often it is sent."""
        job = self._job(job_id, secret)
        parsed = [_message(m) for m in _messages(messages)]
        report = _report_id(report)
        self._jobs.admit_report(job.job_id, "messages")
        self._seen.saw(self._jobs.say(job.job_id, parsed, known=job, report=report) or job)

    def publish_metrics(self, job_id: Any, secret: Any, metrics: Any) -> None:
        job = self._job(job_id, secret)
        try:
            data = base64.b64decode(str(metrics), validate=True)
        except binascii.Error:
            raise InvalidArgument("metrics must be base64") from None
        if len(data) > MAX_METRICS_BYTES:
            raise InvalidArgument(f"metrics of {len(data)} bytes exceed {MAX_METRICS_BYTES}")
        self._jobs.admit_report(job.job_id, "metrics")
        key = metrics_key(job.job_id)
        self._blobs.put(key, data)
        if job.metrics_ref != key:
            self._jobs.store.set_metrics_ref(job.job_id, key)
            self._seen.amend(job.job_id, metrics_ref=key)

    def attach(self, job_id: Any, secret: Any, upstream_job_id: Any, replacing: Any) -> None:
        job = self._job(job_id, secret)
        if not isinstance(upstream_job_id, str) or not 0 < len(upstream_job_id) <= 1000:
            raise InvalidArgument("upstream_job_id must be a string of 1 to 1000 characters")
        if replacing is not None and not isinstance(replacing, str):
            raise InvalidArgument("replacing must be a string")
        self._seen.saw(self._jobs.attach(job.job_id, upstream_job_id, replacing=replacing))

    def mirror(self, job_id: Any, secret: Any, messages: Any) -> str:
        """Append upstream messages not mirrored before; the upstream cursor after them."""
        job = self._job(job_id, secret)
        pairs = [(str(m.get("id", "")), m) for m in _messages(messages)]
        if any(len(message_id) > MAX_UPSTREAM_ID_CHARS for message_id, _ in pairs):
            raise InvalidArgument(
                f"an upstream message id is {MAX_UPSTREAM_ID_CHARS} characters at most"
            )
        parsed = [(i, _message(m)) for i, m in pairs]
        self._jobs.admit_report(job.job_id, "messages")
        after = self._jobs.mirror(job.job_id, parsed)
        self._seen.saw(after)
        return after.upstream.cursor if after.upstream else ""

    def end_as_upstream(self, job_id: Any, secret: Any, state: Any, cause: Any) -> str:
        job = self._job(job_id, secret, read=True)  # (see finish)
        try:
            ended = JobState(state)
        except ValueError:
            raise InvalidArgument(f"state must be a job state, not {str(state)[:40]!r}") from None
        if not is_terminal(ended):
            raise InvalidArgument(f"state must be a final state, not {ended.value}")
        return self._ended(self._outcomes.end_as_upstream(job.job_id, ended, str(cause)))

    def finish(self, job_id: Any, secret: Any) -> str:
        # Read: an outcome is written through the patient client, and stamped when its write
        # begins. Unread, a throttled partition would hold that write for minutes and stamp the
        # job's end long before it lands, so the worker's retried call would find its secret
        # dead; a read, refused at once while throttled, keeps the write from starting early.
        job = self._job(job_id, secret, read=True)
        return self._ended(self._outcomes.finish(job.job_id, known=job))

    def fail(self, job_id: Any, secret: Any, cause: Any) -> str:
        job = self._job(job_id, secret, read=True)  # (see finish)
        return self._ended(self._outcomes.fail(job.job_id, str(cause), known=job))

    def _ended(self, job: Job) -> str:
        """The state a worker's last call left its job in; its secret is no longer kept once
        that is final."""
        self._seen.saw(job)
        if is_terminal(job.state):
            try:
                forget_worker_secret(self._blobs, job.job_id)
            except BeamjobsError:  # dead anyway (refused once the job has ended a while)
                logger.warning("the worker secret of job %s stays kept", job.job_id)
        return job.state.value


def _report_id(report: Any) -> str | None:
    if report is not None and not (isinstance(report, str) and report.isprintable()):
        raise InvalidArgument("a report's request_id must be printable text")
    if report is not None and not 0 < len(report) <= MAX_REPORT_ID_CHARS:
        raise InvalidArgument(f"a report's request_id is 1 to {MAX_REPORT_ID_CHARS} characters")
    return report


def _messages(messages: Any) -> list[Any]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidArgument("messages must be a list of objects")
    return messages


def _message(message: dict[str, Any]) -> Message:
    try:
        parsed = Message(str(message["importance"]), str(message["text"]), float(message["time"]))
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidArgument(f"a message must have importance, text and time: {error}") from error
    # Checked here, once: a stored message of no known importance broke its job's streams.
    if parsed.importance not in IMPORTANCES:
        raise InvalidArgument(
            f"a message's importance is one of {', '.join(IMPORTANCES)}, not {parsed.importance!r}"
        )
    return parsed


def routes(channel: WorkerChannel) -> dict[str, Route]:
    """The channel's calls as handler routes (JSON in, JSON out), for the worker function
    and for the local executor's own endpoint."""

    def job(call: dict[str, Any]) -> tuple[Any, Any]:
        return call["request"].get("job_id"), call["request"].get("worker_secret")

    def claim(call: dict[str, Any]) -> dict[str, Any]:
        resume = call["request"].get("resume") is True
        claimed = channel.claim(*job(call), resume=resume, report=call["request_id"])
        if not isinstance(claimed, Claim):
            return {"claimed": False, "state": claimed.state.value}
        answer = {
            "claimed": True,
            "job": job_to_json(claimed.job),
            "bucket": claimed.bucket,
            "pipeline_url": claimed.pipeline_url,
            "options_url": claimed.options_url,
        }
        if claimed.artifact_urls is not None:
            answer["artifact_urls"] = claimed.artifact_urls
        else:
            answer["artifacts_url"] = claimed.artifacts_url
        return answer

    def beat(call: dict[str, Any]) -> dict[str, Any]:
        return {"state": channel.beat(*job(call))}

    def say(call: dict[str, Any]) -> dict[str, Any]:
        channel.say(*job(call), call["request"].get("messages"), report=call["request_id"])
        return {}

    def publish_metrics(call: dict[str, Any]) -> dict[str, Any]:
        channel.publish_metrics(*job(call), call["request"].get("metrics"))
        return {}

    def attach(call: dict[str, Any]) -> dict[str, Any]:
        request = call["request"]
        channel.attach(*job(call), request.get("upstream_job_id"), request.get("replacing"))
        return {}

    def mirror(call: dict[str, Any]) -> dict[str, Any]:
        return {"cursor": channel.mirror(*job(call), call["request"].get("messages"))}

    def end_as_upstream(call: dict[str, Any]) -> dict[str, Any]:
        request = call["request"]
        state = channel.end_as_upstream(*job(call), request.get("state"), request.get("cause"))
        return {"state": state}

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
        "Attach": attach,
        "Mirror": mirror,
        "EndAsUpstream": end_as_upstream,
    }
