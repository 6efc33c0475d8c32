"""A worker's side of the worker channel (beamjobs.app.worker_channel): how it claims its job,
reads what it runs, and reports, holding nothing but its job's id and worker secret. It reaches
the worker function through an invoker (lambda.invoke on AWS; locally, the same handler served
by `beamjobs serve`)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import urllib3

from beamjobs.aws.invoker import Invoker
from beamjobs.domain.errors import NotFound, Unavailable, error_from_code
from beamjobs.domain.model import Job, Message, identified_batches, job_from_json, message_batches
from beamjobs.domain.states import JobState
from beamjobs.pipeline.artifacts import ArtifactLocation

# The name workers call the channel's function by (its deployed name is their setting). This
# module imports no protobuf classes: the worker loads Beam's own, under the same names.
WORKER_FUNCTION = "worker"
_CHUNK_BYTES = 8 * 1024 * 1024
# urllib3's own retries: connection failures and S3's 5xx answers, with backoff.
_HTTP = urllib3.PoolManager(
    retries=urllib3.Retry(total=5, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504))
)


class Reports(Protocol):
    """One job, as a heartbeat and a message forwarder report through it (the job's channel,
    or the job aggregate's handle, beamjobs.domain.jobs.JobHandle, beside a store)."""

    job_id: str

    def now(self) -> float: ...

    def beat(self) -> JobState: ...

    def say(self, messages: Sequence[Message]) -> None: ...


def _download(url: str) -> Iterator[bytes]:
    response = _HTTP.request("GET", url, preload_content=False)
    try:
        if response.status == 404:
            raise NotFound(f"{url.split('?')[0]} not found")
        if response.status != 200:
            raise Unavailable(f"reading {url.split('?')[0]} answered HTTP {response.status}")
        yield from response.stream(_CHUNK_BYTES)
    finally:
        response.release_conn()


@dataclass(frozen=True)
class Claimed:
    """A job this worker claimed: the job, its pipeline and options, its artifacts."""

    job: Job
    pipeline: bytes
    options: dict[str, Any]
    artifacts: PresignedArtifacts


class PresignedArtifacts:
    """A job's staged artifacts, read by the URLs of its claim."""

    def __init__(self, bucket: str, urls: dict[str, str]) -> None:
        self.location = ArtifactLocation(bucket)
        self._urls = urls

    def read(self, sha256: str) -> Iterator[bytes]:
        if sha256 not in self._urls:
            raise NotFound(f"artifact {sha256} is not one of this job's")
        return _download(self._urls[sha256])


class JobChannel:
    """One job's worker channel."""

    def __init__(self, invoker: Invoker, job_id: str, secret: str) -> None:
        self._invoker = invoker
        self.job_id = job_id
        self._secret = secret

    def _call(self, rpc: str, **request: Any) -> dict[str, Any]:
        event = {
            "rpc": rpc,
            "request_id": uuid.uuid4().hex,
            "request": {"job_id": self.job_id, "worker_secret": self._secret, **request},
        }
        answer = self._invoker.invoke(WORKER_FUNCTION, event)
        if "error" in answer:
            raise error_from_code(answer["error"]["code"], answer["error"]["message"])
        return dict(answer["result"])

    def now(self) -> float:
        return time.time()

    def claim(self, *, resume: bool = False) -> Claimed | JobState:
        """The job, RUNNING and claimed by this worker, with what it runs; else the state
        that says it must not run. A mirror `resume`s: its active job is its again."""
        answer = self._call("Claim", resume=resume)
        if not answer["claimed"]:
            return JobState(answer["state"])
        return Claimed(
            job=job_from_json(answer["job"]),
            pipeline=b"".join(_download(answer["pipeline_url"])),
            options=dict(json.loads(b"".join(_download(answer["options_url"])))),
            artifacts=PresignedArtifacts(
                answer["bucket"], dict(json.loads(b"".join(_download(answer["artifacts_url"]))))
            ),
        )

    def beat(self) -> JobState:
        return JobState(self._call("Beat")["state"])

    def say(self, messages: Sequence[Message]) -> None:
        """In the batches that each fit one event (and so one call)."""
        for batch in message_batches(messages):
            self._call(
                "Say",
                messages=[
                    {"importance": m.importance, "text": m.text, "time": m.time} for m in batch
                ],
            )

    def publish_metrics(self, results: bytes) -> None:
        self._call("PublishMetrics", metrics=base64.b64encode(results).decode())

    def attach(self, upstream_job_id: str, *, replacing: str | None = None) -> None:
        self._call("Attach", upstream_job_id=upstream_job_id, replacing=replacing)

    def mirror(self, messages: Sequence[tuple[str, Message]], cursor: str) -> str:
        """Append upstream messages (id, message) in the batches that each fit one event (and
        so one call); the cursor after them (`cursor` when there were none)."""
        for batch in identified_batches(messages):
            cursor = str(
                self._call(
                    "Mirror",
                    messages=[
                        {"id": i, "importance": m.importance, "text": m.text, "time": m.time}
                        for i, m in batch
                    ],
                )["cursor"]
            )
        return cursor

    def end_as_upstream(self, state: JobState, cause: str) -> JobState:
        return JobState(self._call("EndAsUpstream", state=state.value, cause=cause)["state"])

    def finish(self) -> JobState:
        return JobState(self._call("Finish")["state"])

    def fail(self, cause: str) -> JobState:
        return JobState(self._call("Fail", cause=cause)["state"])
