"""Engines: what a job runs on. The built-in one (`local` on this machine, `fargate` on AWS)
runs Beam's FnApiRunner in a worker of Beamjobs' own; an upstream engine is another Beam Job
API endpoint (Beam's Flink or Spark job server, Prism, another Beamjobs), to which a mirror
(beamjobs.upstream.mirror) hands the job and whose states, messages and metrics it copies into the
job's durable log. A deployment that has Beam's Prism runner also offers `prism`, built in: the
job's mirror starts a Prism of its own on loopback and hands it the job (beamjobs.upstream.prism).

A job's engine is chosen at Prepare, from its `--beamjobs_engine` or else the deployment's
default; a streaming (unbounded) pipeline goes to the deployment's streaming engine (Prism
where there is one), since FnApiRunner runs bounded pipelines only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from beamjobs.domain.errors import FailedPrecondition, InvalidArgument
from beamjobs.domain.executor import Executor, ExecutorError
from beamjobs.domain.model import Job
from beamjobs.domain.options import ENGINE, option_key

# The built-in engine that runs Beam's Prism runner in the job's own mirror.
PRISM = "prism"
# The upstream endpoint of a job on the built-in Prism: none, the mirror starts its own.
OWN_PRISM = ""

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_ENDPOINT = re.compile(r"[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}")


def parse_engine(spec: str) -> tuple[str, str]:
    """`NAME=HOST:PORT` → (name, endpoint); ValueError saying what it must be."""
    name, _, endpoint = spec.strip().partition("=")
    if not _NAME.fullmatch(name) or not _ENDPOINT.fullmatch(endpoint):
        raise ValueError(
            f"NAME=HOST:PORT with a lowercase name of at most 32 letters, digits, - or _, "
            f"not {spec[:100]!r}"
        )
    return name, endpoint


def parse_engines(text: str) -> tuple[str, ...]:
    """The setting's value: comma-separated `NAME=HOST:PORT`, each name once."""
    specs = tuple(part.strip() for part in text.split(",") if part.strip())
    names = [parse_engine(spec)[0] for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError("each engine named once")
    return specs


@runtime_checkable
class MirrorStarter(Protocol):
    """What starts a job's mirror towards an upstream endpoint (OWN_PRISM: towards a Prism the
    mirror starts itself), a process locally, a task of the run-job state machine on AWS.
    Idempotent, as Executor.start is."""

    def start_mirror(self, job: Job, endpoint: str) -> None: ...


@dataclass(frozen=True)
class EngineChoice:
    """The deployment's engines: the built-in one's name, the upstream endpoints by name, the
    default, the engine for streaming pipelines (None: streaming pipelines are refused), and
    whether Prism is built in."""

    builtin: str
    upstreams: Mapping[str, str]
    default: str
    streaming: str | None
    prism: bool = False

    @classmethod
    def of(
        cls,
        builtin: str,
        specs: tuple[str, ...],
        default: str | None,
        streaming: str | None,
        *,
        prism: bool = False,
    ) -> EngineChoice:
        """From the settings; InvalidArgument when the default or the streaming engine is
        not one of them, or the streaming one is the built-in engine (which runs bounded
        pipelines only). With Prism, streaming pipelines go to it unless told otherwise."""
        upstreams = dict(parse_engine(spec) for spec in specs)
        for taken in (builtin, PRISM) if prism else (builtin,):
            if taken in upstreams:
                raise InvalidArgument(f"an upstream engine cannot be named {taken!r} (built in)")
        if streaming is None and prism:
            streaming = PRISM
        choice = cls(builtin, upstreams, default or builtin, streaming, prism)
        for what, name in (("default", choice.default), ("streaming", streaming)):
            if name is not None and name not in choice.names():
                raise InvalidArgument(
                    f"the {what} engine {name!r} is not one of {', '.join(choice.names())}"
                )
        if streaming == builtin:
            raise InvalidArgument(
                f"the streaming engine cannot be {builtin!r}: it runs bounded pipelines only"
            )
        return choice

    def names(self) -> list[str]:
        return [self.builtin, *([PRISM] if self.prism else []), *self.upstreams]

    def choose(self, options: dict[str, Any], *, bounded: bool) -> str:
        """The engine of a job with these options, refused as the client's mistake when the
        name is unknown (INVALID_ARGUMENT) or the engine cannot run the pipeline
        (FAILED_PRECONDITION)."""
        asked = options.get(option_key(ENGINE.name))
        if asked is not None and (not isinstance(asked, str) or asked not in self.names()):
            raise InvalidArgument(
                f"--{ENGINE.name}={str(asked)[:40]!r} is not an engine of this deployment: "
                f"one of {', '.join(self.names())}"
            )
        if bounded:
            return asked or self.default
        engine = asked or self.streaming
        if engine is None or engine == self.builtin:
            streaming = [name for name in self.names() if name != self.builtin]
            offered = ", ".join(streaming) or "none: this deployment has no streaming engine"
            raise FailedPrecondition(
                f"the pipeline is unbounded (streaming), and the {self.builtin!r} engine runs "
                f"bounded pipelines only: choose a streaming engine with "
                f"--{ENGINE.name} ({offered})"
            )
        return engine

    def description(self) -> str:
        """What DescribePipelineOptions says of --beamjobs_engine here."""
        streaming = f"; streaming pipelines: {self.streaming}" if self.streaming else ""
        return f"{ENGINE.description} Here: {', '.join(self.names())}{streaming}."


class Engines:
    """Starts and stops a job's work on its engine."""

    def __init__(self, choice: EngineChoice, builtin: Executor, mirrors: MirrorStarter) -> None:
        self.choice = choice
        self._builtin = builtin
        self._mirrors = mirrors

    @classmethod
    def only(cls, builtin: Executor) -> Engines:
        """The built-in engine alone (no upstream engines)."""
        return cls(EngineChoice.of(builtin.name, (), None, None), builtin, _NO_MIRRORS)

    def start(self, job: Job) -> None:
        """Start the job's work where it was prepared to run ("": before engines, built in)."""
        endpoint = self._mirrored(job)
        if endpoint is not None:
            self._mirrors.start_mirror(job, endpoint)
        elif job.engine in ("", self.choice.builtin):
            self._builtin.start(job)
        else:
            raise ExecutorError(
                f"its engine {job.engine!r} is no longer one of this deployment's "
                f"({', '.join(self.choice.names())})"
            )

    def stop(self, job: Job) -> None:
        """Stop the job's work. An upstream job's mirror forwards the Cancel or Drain itself,
        at its next heartbeat (it alone reaches the upstream)."""
        if self._mirrored(job) is None:
            self._builtin.stop(job.job_id)

    def _mirrored(self, job: Job) -> str | None:
        """The endpoint a mirror follows the job on (OWN_PRISM: its own); None for a job that
        the built-in executor runs."""
        if job.engine == PRISM and self.choice.prism:
            return OWN_PRISM
        return self.choice.upstreams.get(job.engine)


class _NoMirrors:
    """For an executor that starts no mirrors: a deployment without upstream engines."""

    def start_mirror(self, job: Job, endpoint: str) -> None:
        raise ExecutorError(f"this deployment starts no mirrors (asked for {endpoint})")


_NO_MIRRORS = _NoMirrors()
