"""Staged artifacts on the worker. They are fetched (by the URLs its job's claim gave) into a
local cache keyed by sha256
(shared by the jobs of one machine or task: entries are immutable and verified, so sharing
leaks nothing), and the job's pipeline is rewritten to those local files. FnApiRunner's own
ArtifactRetrievalService then serves them to every SDK harness it starts (PROCESS, EXTERNAL);
harnesses in the worker's own process get them installed directly (beamjobs.worker.packages).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from apache_beam.internal import pickler
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from beamjobs.pipeline.artifacts import ArtifactLocation
from beamjobs.worker.caches import owned_directory
from beamjobs.worker.packages import (
    IN_PROCESS_URNS,
    StagedFiles,
    activate,
    install,
    staged_file_name,
)

logger = logging.getLogger(__name__)

URL = common_urns.artifact_types.URL.urn
FILE = common_urns.artifact_types.FILE.urn


class ArtifactSource(Protocol):
    """Where a job's staged artifacts are read from."""

    location: ArtifactLocation

    def read(self, sha256: str) -> Iterator[bytes]: ...


class ArtifactCache:
    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def fetch(self, sha256: str, source: ArtifactSource) -> Path:
        """The local file with the artifact's bytes, downloaded (and verified) when absent. A
        cached file is verified too, each time: one that was changed is fetched again."""
        path = owned_directory(self._directory) / sha256
        if path.exists() and _sha256_of(path) == sha256:
            return path
        # Written aside, then renamed: a concurrent job never sees a partial file.
        with tempfile.NamedTemporaryFile(dir=self._directory, prefix=".part-", delete=False) as out:
            digest = hashlib.sha256()
            for chunk in source.read(sha256):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            os.unlink(out.name)
            raise OSError(f"artifact {sha256} arrived with sha256 {digest.hexdigest()}")
        os.replace(out.name, path)
        return path


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def localize(
    pipeline: beam_runner_api_pb2.Pipeline, cache: ArtifactCache, source: ArtifactSource
) -> None:
    """Rewrite every dependency staged in this deployment's bucket to a file in the cache.
    Other dependencies (an EMBEDDED one, a public URL) are left for FnApiRunner to serve."""
    location = source.location
    for env in pipeline.components.environments.values():
        for artifact in env.dependencies:
            if artifact.type_urn != URL:
                continue
            payload = beam_runner_api_pb2.ArtifactUrlPayload.FromString(artifact.type_payload)
            sha256 = location.sha256_at(payload.url, payload.sha256)
            if sha256 is None:
                continue
            artifact.type_urn = FILE
            artifact.type_payload = beam_runner_api_pb2.ArtifactFilePayload(
                path=str(cache.fetch(sha256, source)), sha256=sha256
            ).SerializeToString()


def link_files(
    artifacts: list[beam_runner_api_pb2.ArtifactInformation], directory: Path
) -> list[beam_runner_api_pb2.ArtifactInformation]:
    """Give localized artifacts their staged names in `directory` (links into the cache), as
    an SDK harness's boot would lay them out; return the artifacts linked."""
    directory.mkdir(parents=True, exist_ok=True)
    linked = []
    for artifact in artifacts:
        if artifact.type_urn != FILE:
            continue
        source = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
        target = directory / staged_file_name(artifact)
        if not target.exists():
            os.symlink(source, target)
        linked.append(artifact)
    return linked


def set_up_in_process(pipeline: beam_runner_api_pb2.Pipeline, workspace: Path) -> str | None:
    """For harnesses in this process: install the staged packages of their environments and
    load the pickled main session, as a harness's boot would. Returns a note for the user
    (None when nothing was staged). Call after the pipeline was localized."""
    artifacts: dict[bytes, beam_runner_api_pb2.ArtifactInformation] = {}
    for env in pipeline.components.environments.values():
        if env.urn in IN_PROCESS_URNS:
            for artifact in env.dependencies:
                artifacts.setdefault(artifact.SerializeToString(deterministic=True), artifact)
    linked = link_files(list(artifacts.values()), workspace / "staged")
    if not linked:
        return None
    staged = StagedFiles.of(workspace / "staged", linked)
    site_dir = install(staged, workspace / "packages")
    if site_dir is not None:
        activate(site_dir)
    if staged.main_session is not None:
        pickler.load_session(str(staged.main_session))
    return f"staged artifacts set up in the worker: {staged.describe()}"
