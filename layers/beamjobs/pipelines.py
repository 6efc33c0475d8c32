"""What the control plane learns from a submitted pipeline without executing it."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from beamjobs.api import pipeline_pb2
from beamjobs.artifacts import ArtifactLocation
from beamjobs.dependencies import staged, unstaged
from beamjobs.environments import DOCKER
from beamjobs.errors import InvalidArgument


@dataclass(frozen=True)
class PipelineSummary:
    bounded: bool
    environment_urns: tuple[str, ...]
    # The dependencies that must be staged before the pipeline can run, by name; and those
    # staged already, by sha256.
    unstaged: tuple[str, ...] = ()
    staged: tuple[str, ...] = ()


def parse(pipeline_bytes: bytes) -> pipeline_pb2.Pipeline:
    """Parse a serialized Beam Pipeline; raise InvalidArgument when it is not one."""
    if not pipeline_bytes:
        raise InvalidArgument("the request has no pipeline")
    pipeline = pipeline_pb2.Pipeline()
    try:
        pipeline.ParseFromString(pipeline_bytes)
    except DecodeError as error:
        raise InvalidArgument(f"the pipeline is not a Beam Pipeline message: {error}") from error
    if not pipeline.root_transform_ids:
        raise InvalidArgument("the pipeline has no root transforms")
    return pipeline


def summarize(pipeline_bytes: bytes, artifacts: ArtifactLocation) -> PipelineSummary:
    pipeline = parse(pipeline_bytes)
    pcollections = pipeline.components.pcollections.values()
    return PipelineSummary(
        bounded=all(p.is_bounded != pipeline_pb2.IsBounded.UNBOUNDED for p in pcollections),
        environment_urns=tuple(
            sorted({env.urn for env in pipeline.components.environments.values()})
        ),
        unstaged=tuple(unstaged(artifacts, pipeline)),
        staged=tuple(staged(artifacts, pipeline)),
    )


def docker_images(pipeline_bytes: bytes) -> list[str]:
    """The container images of the pipeline's DOCKER environments, each once."""
    pipeline = parse(pipeline_bytes)
    images = {
        pipeline_pb2.DockerPayload.FromString(env.payload).container_image: None
        for env in pipeline.components.environments.values()
        if env.urn == DOCKER
    }
    return list(images)
