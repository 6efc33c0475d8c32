"""A scripted upstream engine: a real gRPC Job API server, in this process, whose one job does
what the test tells it to (run, log, fail, drain, be forgotten). It speaks Beamjobs' own wire
classes (no apache_beam), as Beam's job servers speak theirs.

Like Beam's job servers, it replays a job's state history on every state stream, and its
message stream replays every message (as a Beamjobs does) before following."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc

State = api.JobState.Enum
_TERMINAL = {State.DONE, State.FAILED, State.CANCELLED, State.DRAINED}


class ScriptedUpstream(job_api_pb2_grpc.JobServiceServicer):
    def __init__(self, *, drains: bool = True, refuse_prepare: str = "") -> None:
        self.drains = drains
        self.refuse_prepare = refuse_prepare
        self.calls: list[str] = []
        self.prepared: dict[str, Any] = {}
        self._states: list[int] = []
        self._messages: list[tuple[str, int, str]] = []
        self._forgotten = False
        # The cause a failed job's message stream sends after its FAILED state ("": none).
        self.cause_after_failure = ""
        # What Prepare advertises as its staging endpoint, and how large its metrics are.
        self.staging_endpoint = ""
        self.metrics_bytes = 0
        # How long GetJobMetrics takes to answer (a slow engine).
        self.metrics_seconds = 0.0
        self._changed = threading.Condition()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        job_api_pb2_grpc.add_JobServiceServicer_to_server(self, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"127.0.0.1:{port}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop(0)

    # -- what the test scripts ---------------------------------------------------------------

    def say(
        self,
        text: str,
        importance: int = api.JobMessage.JOB_MESSAGE_BASIC,
        message_id: str | None = None,
    ) -> None:
        with self._changed:
            number = str(len(self._messages) + 1)
            self._messages.append((number if message_id is None else message_id, importance, text))
            self._changed.notify_all()

    def move(self, state: int) -> None:
        with self._changed:
            self._states.append(state)
            self._changed.notify_all()

    def forget(self) -> None:
        """As a job server that restarted: it knows no job any more."""
        self._forgotten = True

    @property
    def state(self) -> int:
        with self._changed:
            return self._states[-1] if self._states else State.UNSPECIFIED

    # -- the Job API ---------------------------------------------------------------------------

    def _known(self, job_id: str, context: Any) -> None:
        if self._forgotten or job_id not in self.prepared:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_id} does not exist")

    def Prepare(self, request: Any, context: Any) -> Any:
        self.calls.append("Prepare")
        if self.refuse_prepare:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.refuse_prepare)
        job_id = f"up-{len(self.prepared) + 1}"
        self.prepared[job_id] = request
        self.move(State.STOPPED)
        return api.PrepareJobResponse(
            preparation_id=job_id,
            staging_session_token="t",
            artifact_staging_endpoint={"url": self.staging_endpoint},
        )

    def Run(self, request: Any, context: Any) -> Any:
        self._known(request.preparation_id, context)
        self.calls.append("Run")
        self.move(State.STARTING)
        self.move(State.RUNNING)
        return api.RunJobResponse(job_id=request.preparation_id)

    def GetState(self, request: Any, context: Any) -> Any:
        self._known(request.job_id, context)
        return api.JobStateEvent(state=self.state)

    def Cancel(self, request: Any, context: Any) -> Any:
        self._known(request.job_id, context)
        self.calls.append("Cancel")
        if self.state not in _TERMINAL:
            self.move(State.CANCELLING)
            self.move(State.CANCELLED)
        return api.CancelJobResponse(state=self.state)

    def Drain(self, request: Any, context: Any) -> Any:
        self._known(request.job_id, context)
        self.calls.append("Drain")
        if not self.drains:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this engine cannot drain")
        self.move(State.DRAINING)
        threading.Timer(0.3, self.move, (State.DRAINED,)).start()
        return api.DrainJobResponse(state=State.DRAINING)

    def GetJobMetrics(self, request: Any, context: Any) -> Any:
        self._known(request.job_id, context)
        time.sleep(self.metrics_seconds)
        committed = [b"x" * self.metrics_bytes] if self.metrics_bytes else [b"counter"]
        return api.GetJobMetricsResponse(metrics=api.MetricResults(committed=committed))

    def GetStateStream(self, request: Any, context: Any) -> Any:
        self._known(request.job_id, context)
        for _, value in self._follow(context, messages=False):
            yield api.JobStateEvent(state=value, timestamp=timestamp_pb2.Timestamp())

    def GetMessageStream(self, request: Any, context: Any) -> Any:
        self._known(request.job_id, context)
        yield from self._message_stream(context)
        if self.cause_after_failure and self.state == State.FAILED:
            # As Prism sends a failure's cause: after the FAILED state, with no id.
            yield api.JobMessagesResponse(
                message_response=api.JobMessage(
                    importance=api.JobMessage.JOB_MESSAGE_ERROR,
                    message_text=self.cause_after_failure,
                )
            )

    def _message_stream(self, context: Any) -> Any:
        for kind, value in self._follow(context, messages=True):
            if kind == "state":
                yield api.JobMessagesResponse(state_response=api.JobStateEvent(state=value))
            else:
                message_id, importance, text = value
                yield api.JobMessagesResponse(
                    message_response=api.JobMessage(
                        message_id=message_id, importance=importance, message_text=text
                    )
                )

    def _follow(self, context: Any, *, messages: bool) -> Any:
        """States (and messages), replayed then live, until a terminal state."""
        sent = {"states": 0, "messages": 0}

        def news() -> bool:
            return len(self._states) > sent["states"] or (
                messages and len(self._messages) > sent["messages"]
            )

        while context.is_active():
            with self._changed:
                self._changed.wait_for(news, timeout=0.5)
                new_messages = self._messages[sent["messages"] :] if messages else []
                new_states = self._states[sent["states"] :]
            sent["messages"] += len(new_messages)
            sent["states"] += len(new_states)
            for message in new_messages:
                yield "message", message
            for state in new_states:
                yield "state", state
                if state in _TERMINAL:
                    return
