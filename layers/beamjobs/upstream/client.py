"""A client of an upstream engine's Beam Job API (Beam's Flink or Spark job server, Prism, another
Beamjobs), as the SDK is one: prepare, offer the artifacts by reverse retrieval, run, follow,
measure, cancel, drain. The mirror (beamjobs.upstream.mirror) drives it; it speaks Beamjobs' own
wire classes, so it needs no apache_beam.

Every failure is a domain error carrying the upstream's own status (its gRPC status names are
the domain's codes): UNAVAILABLE when the engine cannot be reached, NOT_FOUND when it does not
know the job, and so on.
"""

from __future__ import annotations

import contextlib
import queue
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2

from beamjobs.api import artifact_api_pb2, artifact_api_pb2_grpc, job_api_pb2, job_api_pb2_grpc
from beamjobs.api.pipeline_pb2 import ArtifactInformation
from beamjobs.domain.errors import BeamjobsError, FailedPrecondition
from beamjobs.domain.limits import MAX_UPSTREAM_ID_CHARS
from beamjobs.domain.states import JobState
from beamjobs.pipeline.dependencies import declared_sha256

# Bytes of an artifact per staging message: well within any job server's message limit.
CHUNK_BYTES = 1024 * 1024
# The largest message an upstream may send the mirror (its answers, stream items and metrics:
# the worker channel takes metrics of 4 MiB at most); it may be sent pipelines of any size.
RECEIVE_MAX_BYTES = 8 * 1024 * 1024
# Unary calls to the upstream answer within this long, or count as a failure to reach it.
CALL_SECONDS = 30.0
_STATE_NAMES = job_api_pb2.JobState.Enum
# Addresses a job server advertises that mean "this host" (see _reachable).
_LOCAL_HOSTS = frozenset({"0.0.0.0", "::", "localhost", "127.0.0.1", "::1"})
_IMPORTANCE_NAMES = job_api_pb2.JobMessage.MessageImportance


class UpstreamError(BeamjobsError):
    """What the upstream answered: its gRPC status is this error's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _error(error: grpc.RpcError) -> UpstreamError:
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else "") or str(error)
    return UpstreamError(code.name, details)


@contextlib.contextmanager
def upstream_errors() -> Iterator[None]:
    """gRPC errors of the upstream as domain errors with the upstream's status."""
    try:
        yield
    except grpc.RpcError as error:
        raise _error(error) from error


def job_state(value: int) -> JobState | None:
    """Beam's JobState number as a job state; None for those Beamjobs has no use for
    (UNSPECIFIED, UPDATED, UPDATING)."""
    try:
        return JobState(_STATE_NAMES.Name(value))
    except ValueError:
        return None


def importance(value: int) -> str:
    """A JobMessage's importance by Beam's name (unspecified ones count as BASIC)."""
    name = _IMPORTANCE_NAMES.Name(value) if value in _IMPORTANCE_NAMES.values() else ""
    return name if name.startswith("JOB_MESSAGE_") else "JOB_MESSAGE_BASIC"


@dataclass(frozen=True)
class Preparation:
    preparation_id: str
    staging_endpoint: str
    staging_token: str


@dataclass(frozen=True)
class UpstreamMessage:
    message_id: str
    importance: str
    text: str


# What an upstream stream yields: a state change, or a message.
StreamItem = JobState | UpstreamMessage


class UpstreamJobService:
    """One upstream endpoint, over one plaintext channel (upstream job servers sit on the
    deployment's private network; Beam's job servers speak plaintext only)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._channel = grpc.insecure_channel(
            endpoint,
            options=[
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", RECEIVE_MAX_BYTES),
            ],
        )
        self._jobs = job_api_pb2_grpc.JobServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def prepare(self, pipeline: bytes, options: dict[str, Any], job_name: str) -> Preparation:
        struct = struct_pb2.Struct()
        struct.update(options)
        with upstream_errors():
            answer = self._jobs.Prepare(
                job_api_pb2.PrepareJobRequest(
                    pipeline=pipeline, pipeline_options=struct, job_name=job_name
                ),
                timeout=CALL_SECONDS,
            )
        return Preparation(
            answer.preparation_id,
            self._reachable(answer.artifact_staging_endpoint.url),
            answer.staging_session_token,
        )

    def _reachable(self, staging_endpoint: str) -> str:
        """The staging endpoint, as this machine reaches it: job servers bound to every
        interface, or to their own loopback, advertise that address (Beam's own do), which
        means the host of the Job API endpoint here. Any other must be the engine's own host
        (by name, or by address): the job's artifacts go nowhere else, whatever an engine
        answers."""
        host, _, port = staging_endpoint.rpartition(":")
        own_host = self.endpoint.rpartition(":")[0]
        if host.strip("[]") in _LOCAL_HOSTS and port:
            return f"{own_host}:{port}"
        if staging_endpoint and not _same_host(host, own_host):
            raise FailedPrecondition(
                f"the engine at {self.endpoint} named a staging endpoint on another host "
                f"({staging_endpoint[:200]}): a job's artifacts are sent to the engine's own "
                "host only"
            )
        return staging_endpoint

    def run(self, preparation_id: str) -> str:
        with upstream_errors():
            answer = self._jobs.Run(
                job_api_pb2.RunJobRequest(preparation_id=preparation_id), timeout=CALL_SECONDS
            )
        return str(answer.job_id)

    def state(self, job_id: str) -> JobState | None:
        with upstream_errors():
            answer = self._jobs.GetState(
                job_api_pb2.GetJobStateRequest(job_id=job_id), timeout=CALL_SECONDS
            )
        return job_state(answer.state)

    def cancel(self, job_id: str) -> None:
        with upstream_errors():
            self._jobs.Cancel(job_api_pb2.CancelJobRequest(job_id=job_id), timeout=CALL_SECONDS)

    def drain(self, job_id: str) -> None:
        with upstream_errors():
            self._jobs.Drain(job_api_pb2.DrainJobRequest(job_id=job_id), timeout=CALL_SECONDS)

    def metrics(self, job_id: str) -> bytes:
        """The job's MetricResults, serialized."""
        with upstream_errors():
            answer = self._jobs.GetJobMetrics(
                job_api_pb2.GetJobMetricsRequest(job_id=job_id), timeout=CALL_SECONDS
            )
        return bytes(answer.metrics.SerializeToString())

    def states(self, job_id: str) -> Followed:
        """The job's state stream (the history first, as Beam's job servers replay it)."""
        call = self._jobs.GetStateStream(job_api_pb2.GetJobStateRequest(job_id=job_id))
        return Followed(call, lambda event: job_state(event.state))

    def messages(self, job_id: str) -> Followed:
        """The job's message stream: messages and state changes, in the upstream's order."""

        def item(response: Any) -> StreamItem | None:
            if response.HasField("message_response"):
                message = response.message_response
                # An id longer than a cursor may be orders nothing: the message is mirrored
                # as one of the mirror's own (a mirror that resumes may mirror it again).
                message_id = message.message_id
                if len(message_id) > MAX_UPSTREAM_ID_CHARS:
                    message_id = ""
                return UpstreamMessage(
                    message_id, importance(message.importance), message.message_text
                )
            return job_state(response.state_response.state)

        call = self._jobs.GetMessageStream(job_api_pb2.JobMessagesRequest(job_id=job_id))
        return Followed(call, item)

    def stage(self, endpoint: str, token: str, offered: Offered) -> None:
        """Offer the job's artifacts to the upstream's staging service (Beam's reverse
        retrieval: it asks us to resolve them, then for each one's bytes)."""
        responses: queue.SimpleQueue[Any] = queue.SimpleQueue()
        responses.put(artifact_api_pb2.ArtifactResponseWrapper(staging_token=token))
        channel = self._channel if endpoint == self.endpoint else grpc.insecure_channel(endpoint)
        stub = artifact_api_pb2_grpc.ArtifactStagingServiceStub(channel)
        try:
            with upstream_errors():
                requests = stub.ReverseArtifactRetrievalService(_until_none(responses))
                try:
                    for request in requests:
                        for response in offered.answer(request):
                            responses.put(response)
                finally:
                    responses.put(None)
        finally:
            if channel is not self._channel:
                channel.close()


def _same_host(host: str, other: str) -> bool:
    """Whether two host names (or addresses) are one host: the same name, or a shared
    address."""
    host, other = host.strip("[]"), other.strip("[]")
    if host == other:
        return True
    try:
        return bool(_addresses(host) & _addresses(other))
    except OSError:  # a name that does not resolve is no host of the engine's
        return False


def _addresses(host: str) -> set[str]:
    return {str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}


def _until_none(items: queue.SimpleQueue[Any]) -> Iterator[Any]:
    while (item := items.get()) is not None:
        yield item


class Followed:
    """An open stream of the upstream's: iterate for its items (None-mapped ones skipped);
    `cancel` ends it from another thread."""

    def __init__(self, call: Any, convert: Callable[[Any], StreamItem | None]) -> None:
        self._call = call
        self._convert = convert

    def __iter__(self) -> Iterator[StreamItem]:
        with upstream_errors():
            for response in self._call:
                item = self._convert(response)
                if item is not None:
                    yield item

    def cancel(self) -> None:
        self._call.cancel()


class Offered:
    """The artifacts a job offers its upstream, as files named by their sha256, and how to read
    each one's bytes by that sha256 (in chunks of any size)."""

    def __init__(self, read: Callable[[str], Iterable[bytes]]) -> None:
        self._read = read

    def answer(self, request: Any) -> Iterator[Any]:
        """The responses to one of the staging service's requests."""
        wrapper = artifact_api_pb2.ArtifactResponseWrapper
        if request.HasField("resolve_artifact"):
            # Already files: each resolves to itself.
            yield wrapper(
                resolve_artifact_response=artifact_api_pb2.ResolveArtifactsResponse(
                    replacements=request.resolve_artifact.artifacts
                )
            )
            return
        artifact: ArtifactInformation = request.get_artifact.artifact
        for chunk in _rechunked(self._read(declared_sha256(artifact)), CHUNK_BYTES):
            yield wrapper(get_artifact_response=artifact_api_pb2.GetArtifactResponse(data=chunk))
        yield wrapper(
            get_artifact_response=artifact_api_pb2.GetArtifactResponse(data=b""), is_last=True
        )


def _rechunked(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    for chunk in chunks:
        for start in range(0, len(chunk), size):
            yield chunk[start : start + size]
