"""A worker's side of the worker channel (beamjobs.app.worker_channel): how it claims its job,
reads what it runs, and reports, holding nothing but its job's id and worker secret. It reaches
the worker function through an invoker (lambda.invoke on AWS; locally, the same handler served
by `beamjobs serve`)."""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import urllib3

from beamjobs.aws import clients
from beamjobs.aws.invoker import Invoker, LambdaInvoker
from beamjobs.domain.errors import NotFound, Unavailable, error_from_code
from beamjobs.domain.model import Job, Message, identified_batches, job_from_json, message_batches
from beamjobs.domain.states import JobState
from beamjobs.pipeline.artifacts import ArtifactLocation
from beamjobs.settings import Settings

logger = logging.getLogger(__name__)

# The name workers call the channel's function by (its deployed name is their setting). This
# module imports no protobuf classes: the worker loads Beam's own, under the same names.
WORKER_FUNCTION = "worker"
_CHUNK_BYTES = 8 * 1024 * 1024
# How long a worker keeps making the calls its job cannot do without, its claim and its
# outcome, while the channel answers UNAVAILABLE: past a long throttle of the function or of
# the job's DynamoDB partition (minutes), within the time a task's end is noticed anyway.
INSIST_SECONDS = 600.0
INSIST_BACKOFF_SECONDS = 20.0
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


def _result(answer: dict[str, Any]) -> dict[str, Any]:
    if "error" in answer:
        raise error_from_code(answer["error"]["code"], answer["error"]["message"])
    return dict(answer["result"])


def channel_invokers(settings: Settings) -> tuple[LambdaInvoker, LambdaInvoker]:
    """The invokers of a worker's channel: for its reports and outcome (patient: a job's
    outcome must not be lost to a passing throttle of the function), and for its heartbeat
    (brief: a missed beat is retried by the next, and an outcome in doubt is not waited for
    longer than a beat's interval)."""
    names = {WORKER_FUNCTION: settings.worker_function or WORKER_FUNCTION}
    reports = LambdaInvoker(clients.client("lambda", settings, budget="patient"), names)
    beats = LambdaInvoker(
        clients.client("lambda", settings, budget="brief"),
        names,
        in_doubt_seconds=settings.heartbeat_seconds,
    )
    return reports, beats


def take_offer(invoker: Invoker, job_id: str, task_token: str, proof: str) -> str:
    """Take a job offered to the warm pool (beamjobs.app.warm_offers): its worker secret.
    FailedPrecondition when the offer is gone; PermissionDenied when this task may take none."""
    event = {
        "rpc": "TakeOffer",
        "request_id": uuid.uuid4().hex,
        "request": {"job_id": job_id, "task_token": task_token, "proof": proof},
    }
    return str(_result(invoker.invoke(WORKER_FUNCTION, event))["worker_secret"])


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
    """One job's worker channel. Its heartbeat goes through an invoker of its own (`beats`):
    one with a brief budget, so that a throttle never holds a beat back behind retries, nor
    behind the reports queued on the other. Its claim and its outcome are tried again, the same
    call, while the channel answers UNAVAILABLE (the function is throttled, or could not write
    because the job's partition is) for up to INSIST_SECONDS: a worker that is alive is not to
    be reported lost, nor a succeeded pipeline failed."""

    def __init__(
        self,
        invoker: Invoker,
        job_id: str,
        secret: str,
        *,
        beats: Invoker | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._invoker = invoker
        self._beats = beats or invoker
        self.job_id = job_id
        self._secret = secret
        self._sleep = sleep
        self._clock = clock

    def _event(self, rpc: str, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "rpc": rpc,
            "request_id": uuid.uuid4().hex,
            "request": {"job_id": self.job_id, "worker_secret": self._secret, **request},
        }

    def _call(self, rpc: str, *, invoker: Invoker | None = None, **request: Any) -> dict[str, Any]:
        return _result(
            (invoker or self._invoker).invoke(WORKER_FUNCTION, self._event(rpc, request))
        )

    def _insist(self, rpc: str, **request: Any) -> dict[str, Any]:
        """The same call (so the same request id: its answer is recorded once) again while it
        answers UNAVAILABLE, for up to INSIST_SECONDS. Botocore retries each invocation, but
        within a budget that a minute's throttle outlasts (and its retry quota, shared by the
        process's calls, runs dry); this loop outlasts it."""
        event = self._event(rpc, request)
        give_up = self._clock() + INSIST_SECONDS
        wait = 1.0
        while True:
            try:
                return _result(self._invoker.invoke(WORKER_FUNCTION, event))
            except Unavailable:
                if self._clock() + wait > give_up:
                    raise
                logger.warning("%s of job %s: unavailable, trying again", rpc, self.job_id)
                self._sleep(wait)
                wait = min(wait * 2, INSIST_BACKOFF_SECONDS)

    def _outcome(self, rpc: str, **request: Any) -> JobState:
        return JobState(self._insist(rpc, **request)["state"])

    def now(self) -> float:
        return time.time()

    def claim(self, *, resume: bool = False) -> Claimed | JobState:
        """The job, RUNNING and claimed by this worker, with what it runs; else the state
        that says it must not run. A mirror `resume`s: its active job is its again."""
        answer = self._insist("Claim", resume=resume)
        if not answer["claimed"]:
            return JobState(answer["state"])
        job = job_from_json(answer["job"])
        # What the answer holds already (the options a job keeps inline, a few artifacts'
        # URLs) is not downloaded.
        options = job.options_json or b"".join(_download(answer["options_url"]))
        artifact_urls = answer.get("artifact_urls")
        if artifact_urls is None:
            artifact_urls = json.loads(b"".join(_download(answer["artifacts_url"])))
        return Claimed(
            job=job,
            pipeline=b"".join(_download(answer["pipeline_url"])),
            options=dict(json.loads(options)),
            artifacts=PresignedArtifacts(answer["bucket"], dict(artifact_urls)),
        )

    def beat(self) -> JobState:
        return JobState(self._call("Beat", invoker=self._beats)["state"])

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
        return self._outcome("EndAsUpstream", state=state.value, cause=cause)

    def finish(self) -> JobState:
        return self._outcome("Finish")

    def fail(self, cause: str) -> JobState:
        return self._outcome("Fail", cause=cause)
