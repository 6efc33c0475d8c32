"""What a pipeline's environments depend on, and which of those are staged.

A staged dependency is Beam's URL artifact at the content address of its bytes, keeping its role
(e.g. "stage to `pkg.tar.gz`"), so a pipeline read back with GetPipeline shows
where every dependency went. Anything else (a path on the client's machine, inline bytes,
another URL) must be staged before the job can run. So must a staged one whose bytes the
submitter did not send itself (`held` says which it did): knowing an artifact's hash is not
having its bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from beamjobs.api import pipeline_pb2
from beamjobs.pipeline.artifacts import EMBEDDED, FILE, STAGING_TO, URL, ArtifactLocation


def declared_sha256(artifact: pipeline_pb2.ArtifactInformation) -> str:
    """The sha256 the artifact's payload claims for its bytes ("" when it claims none)."""
    if artifact.type_urn == FILE:
        return pipeline_pb2.ArtifactFilePayload.FromString(artifact.type_payload).sha256
    if artifact.type_urn == URL:
        return pipeline_pb2.ArtifactUrlPayload.FromString(artifact.type_payload).sha256
    if artifact.type_urn == EMBEDDED:
        data = pipeline_pb2.EmbeddedFilePayload.FromString(artifact.type_payload).data
        return hashlib.sha256(data).hexdigest()
    return ""


def display_name(artifact: pipeline_pb2.ArtifactInformation) -> str:
    """How a user recognises an artifact: its staged name, else its path or URL."""
    if artifact.role_urn == STAGING_TO:
        name = pipeline_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload)
        if name.staged_name:
            return name.staged_name
    if artifact.type_urn == FILE:
        return pipeline_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
    if artifact.type_urn == URL:
        return pipeline_pb2.ArtifactUrlPayload.FromString(artifact.type_payload).url
    return f"{artifact.type_urn} ({artifact.role_urn or 'no role'})"


def reference(
    location: ArtifactLocation, sha256: str, like: pipeline_pb2.ArtifactInformation
) -> pipeline_pb2.ArtifactInformation:
    """`like` (same role), staged at the content address of `sha256`."""
    return pipeline_pb2.ArtifactInformation(
        type_urn=URL,
        type_payload=pipeline_pb2.ArtifactUrlPayload(
            url=location.url(sha256), sha256=sha256
        ).SerializeToString(),
        role_urn=like.role_urn,
        role_payload=like.role_payload,
    )


def staged_sha256(
    location: ArtifactLocation, artifact: pipeline_pb2.ArtifactInformation
) -> str | None:
    """The content hash of an artifact already staged here; None if it must be staged."""
    if artifact.type_urn != URL:
        return None
    payload = pipeline_pb2.ArtifactUrlPayload.FromString(artifact.type_payload)
    return location.sha256_at(payload.url, payload.sha256)


Held = Callable[[str], bool]


def staged(location: ArtifactLocation, pipeline: pipeline_pb2.Pipeline, held: Held) -> list[str]:
    """The sha256 of each of the pipeline's dependencies staged here and `held`, each once."""
    shas: dict[str, None] = {}
    for env in pipeline.components.environments.values():
        for artifact in env.dependencies:
            sha = staged_sha256(location, artifact)
            if sha is not None and held(sha):
                shas[sha] = None
    return list(shas)


def unstaged(location: ArtifactLocation, pipeline: pipeline_pb2.Pipeline, held: Held) -> list[str]:
    """The names of the pipeline's dependencies that still need staging, each once."""
    names: dict[str, None] = {}
    for env in pipeline.components.environments.values():
        for artifact in env.dependencies:
            sha = staged_sha256(location, artifact)
            if sha is None or not held(sha):
                names[display_name(artifact)] = None
    return list(names)
