"""What the control plane learns from a submitted pipeline without executing it."""

from __future__ import annotations

from dataclasses import dataclass

from beamjobs.api import pipeline_pb2
from beamjobs.pipeline.artifacts import ArtifactLocation
from beamjobs.pipeline.dependencies import (
    Held,
    declared_sha256,
    display_name,
    staged,
    staged_sha256,
    unstaged,
)
from beamjobs.pipeline.environments import DOCKER


@dataclass(frozen=True)
class PipelineSummary:
    bounded: bool
    environment_urns: tuple[str, ...]
    # The dependencies that must be staged before the pipeline can run, by name; and those
    # staged already, by sha256.
    unstaged: tuple[str, ...] = ()
    staged: tuple[str, ...] = ()


def is_bounded(pipeline: pipeline_pb2.Pipeline) -> bool:
    """A batch pipeline: no PCollection of it is unbounded."""
    pcollections = pipeline.components.pcollections.values()
    return all(p.is_bounded != pipeline_pb2.IsBounded.UNBOUNDED for p in pcollections)


def summarize(
    pipeline: pipeline_pb2.Pipeline, artifacts: ArtifactLocation, held: Held
) -> PipelineSummary:
    """What the control plane records of a pipeline; a dependency staged here counts as staged
    only if `held` (its sha256) says the submitter sent its bytes."""
    return PipelineSummary(
        bounded=is_bounded(pipeline),
        environment_urns=tuple(
            sorted({env.urn for env in pipeline.components.environments.values()})
        ),
        unstaged=tuple(unstaged(artifacts, pipeline, held)),
        staged=tuple(staged(artifacts, pipeline, held)),
    )


def docker_images(pipeline: pipeline_pb2.Pipeline) -> list[str]:
    """The container images of the pipeline's DOCKER environments, each once."""
    images = {
        pipeline_pb2.DockerPayload.FromString(env.payload).container_image: None
        for env in pipeline.components.environments.values()
        if env.urn == DOCKER
    }
    return list(images)


@dataclass(frozen=True)
class EnvironmentView:
    environment_id: str
    urn: str
    container_image: str = ""


@dataclass(frozen=True)
class ArtifactView:
    environment_id: str
    name: str
    sha256: str
    staged: bool


def environments(pipeline: pipeline_pb2.Pipeline) -> list[EnvironmentView]:
    """The pipeline's environments, by id."""
    return [
        EnvironmentView(
            env_id,
            env.urn,
            pipeline_pb2.DockerPayload.FromString(env.payload).container_image
            if env.urn == DOCKER
            else "",
        )
        for env_id, env in sorted(pipeline.components.environments.items())
    ]


def dependencies(
    pipeline: pipeline_pb2.Pipeline, artifacts: ArtifactLocation
) -> list[ArtifactView]:
    """Every environment's dependencies: what each is called, and whether it is staged here."""
    return [
        ArtifactView(
            env_id,
            display_name(artifact),
            staged_sha256(artifacts, artifact) or declared_sha256(artifact),
            staged_sha256(artifacts, artifact) is not None,
        )
        for env_id, env in sorted(pipeline.components.environments.items())
        for artifact in env.dependencies
    ]
