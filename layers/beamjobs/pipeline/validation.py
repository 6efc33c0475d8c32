"""Checking requests before anything is written: ids, names, pipelines and options.

A Prepare is checked whole, and every problem found is reported at once (as Beam's Prism does),
so a client fixes them in one round. The shim checks before it stores the pipeline; the
handler checks again, as it may be invoked directly.
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf.message import DecodeError

from beamjobs.api import pipeline_pb2
from beamjobs.domain.errors import InvalidArgument
from beamjobs.domain.limits import (
    ID_MAX_CHARS,
    JOB_NAME_MAX_BYTES,
    MAX_DEPENDENCIES,
    MAX_ENVIRONMENTS,
    MAX_OPTIONS,
    OPTIONS_MAX_BYTES,
    STAGED_NAME_MAX_BYTES,
    URN_MAX_BYTES,
)
from beamjobs.domain.options import SERVICE_OPTIONS, option_key, read_option
from beamjobs.pipeline.artifacts import STAGING_TO
from beamjobs.pipeline.environments import DOCKER

_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{ID_MAX_CHARS - 1}}}")
JOB_NAME_OPTION = option_key("job_name")


def require_id(value: Any, what: str = "job_id") -> str:
    """An id from a request: letters, digits, '.', '_' and '-', starting with a letter or
    digit, at most ID_MAX_CHARS long."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} is required")
    if not _ID.fullmatch(value):
        raise InvalidArgument(
            f"{what} is not a valid id: at most {ID_MAX_CHARS} letters, digits, '.', '_' or "
            "'-', starting with a letter or digit"
        )
    return value


def _utf8(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def text_problem(what: str, value: Any, max_bytes: int) -> str | None:
    """Why `value` is not a printable string of at most `max_bytes` UTF-8 bytes, or None."""
    if not isinstance(value, str):
        return f"{what} must be a string"
    if _utf8(value) > max_bytes:
        return f"{what} is {_utf8(value)} bytes; the limit is {max_bytes} bytes"
    if not value.isprintable():
        return f"{what} holds control or formatting characters"
    return None


def staged_name_problem(name: str) -> str | None:
    """Why `name` is not a plain file name (workers write the artifact under it), or None."""
    problem = text_problem(f"staged_name {name[:80]!r}", name, STAGED_NAME_MAX_BYTES)
    if problem:
        return problem
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        return f"staged_name {name[:80]!r} must be a plain file name (no directory)"
    return None


def check_prepare(pipeline_bytes: bytes, options: Any, job_name: Any) -> pipeline_pb2.Pipeline:
    """The pipeline of a well-formed Prepare; InvalidArgument naming every problem otherwise."""
    problems = [p for p in (text_problem("job_name", job_name, JOB_NAME_MAX_BYTES),) if p]
    problems += options_problems(options)
    pipeline, pipeline_problems = _parse(pipeline_bytes)
    problems += pipeline_problems
    if problems:
        raise InvalidArgument("; ".join(problems))
    assert pipeline is not None
    return pipeline


def parse_pipeline(pipeline_bytes: bytes) -> pipeline_pb2.Pipeline:
    """A well-formed Beam Pipeline; InvalidArgument naming every problem otherwise."""
    pipeline, problems = _parse(pipeline_bytes)
    if problems:
        raise InvalidArgument("; ".join(problems))
    assert pipeline is not None
    return pipeline


def _parse(pipeline_bytes: bytes) -> tuple[pipeline_pb2.Pipeline | None, list[str]]:
    if not pipeline_bytes:
        return None, ["the request has no pipeline"]
    pipeline = pipeline_pb2.Pipeline()
    try:
        pipeline.ParseFromString(pipeline_bytes)
    except DecodeError as error:
        return None, [f"the pipeline is not a Beam Pipeline message: {error}"]
    return pipeline, pipeline_problems(pipeline)


def pipeline_problems(pipeline: pipeline_pb2.Pipeline) -> list[str]:
    problems: list[str] = []
    transforms = pipeline.components.transforms
    if not pipeline.root_transform_ids:
        problems.append("the pipeline has no root transforms")
    missing = [t for t in pipeline.root_transform_ids if t not in transforms]
    if missing:
        problems.append(f"root transforms {_few(missing)} are not among the pipeline's transforms")
    for transform_id, transform in transforms.items():
        if _utf8(transform.spec.urn) > URN_MAX_BYTES:
            problems.append(f"transform {transform_id[:80]!r} has a URN over {URN_MAX_BYTES} bytes")
    environments = pipeline.components.environments
    if len(environments) > MAX_ENVIRONMENTS:
        problems.append(f"{len(environments)} environments; the limit is {MAX_ENVIRONMENTS}")
    dependencies = sum(len(env.dependencies) for env in environments.values())
    if dependencies > MAX_DEPENDENCIES:
        problems.append(f"{dependencies} dependencies; the limit is {MAX_DEPENDENCIES}")
    for env_id, env in environments.items():
        urn = text_problem(f"the URN of environment {env_id[:80]!r}", env.urn, URN_MAX_BYTES)
        if urn:
            problems.append(urn)
        if env.urn == DOCKER:
            try:
                pipeline_pb2.DockerPayload.FromString(env.payload)
            except DecodeError:
                problems.append(f"environment {env_id[:80]!r} has a malformed DOCKER payload")
        if dependencies <= MAX_DEPENDENCIES:
            problems += dependency_problems(f"environment {env_id[:80]!r}", env.dependencies)
    return problems


def dependency_problems(owner: str, dependencies: Any) -> list[str]:
    """What is wrong with the dependencies of `owner` (an environment, an SDK's resolution):
    a staged name must be a plain file name."""
    problems = []
    for artifact in dependencies:
        if artifact.role_urn != STAGING_TO:
            continue
        try:
            role = pipeline_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload)
        except DecodeError:
            problems.append(f"a dependency of {owner} has a malformed role")
            continue
        problem = staged_name_problem(role.staged_name)
        if problem:
            problems.append(problem)
    return problems


def options_problems(options: Any) -> list[str]:
    """What is wrong with submitted pipeline options (Beam's Struct, as JSON)."""
    if not isinstance(options, dict):
        return ["pipeline_options must be a Struct"]
    problems = []
    if len(options) > MAX_OPTIONS:
        problems.append(f"{len(options)} pipeline options; the limit is {MAX_OPTIONS}")
    size = len(json.dumps(options, separators=(",", ":")).encode())
    if size > OPTIONS_MAX_BYTES:
        problems.append(f"pipeline options are {size} bytes; the limit is {OPTIONS_MAX_BYTES}")
    if JOB_NAME_OPTION in options:
        problem = text_problem("--job_name", options[JOB_NAME_OPTION], JOB_NAME_MAX_BYTES)
        if problem:
            problems.append(problem)
    for descriptor in SERVICE_OPTIONS:
        try:
            read_option(options, descriptor)
        except InvalidArgument as error:
            problems.append(error.message)
    return problems


def _few(items: list[str]) -> str:
    shown = ", ".join(repr(i[:80]) for i in items[:5])
    return shown + (f" and {len(items) - 5} more" if len(items) > 5 else "")
