"""Installing a job's staged Python dependencies the way Beam's SDK container boot does:
extra packages (forced, so the user's staged code wins), then the setup package, then the
requirements files (first offline from what was staged, then with the package index for whatever
is still missing).

It imports nothing of Beamjobs beyond this module, so that `beamjobs.worker.boot` runs in the
environment of any Beam release (see beamjobs.worker.image_environments).

Everything goes under a per-job prefix that is put first on sys.path and PYTHONPATH; the
worker's own environment is never modified, so one job's packages cannot reach another.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import site
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2

logger = logging.getLogger(__name__)

EXTRA_PACKAGES_FILE = "extra_packages.txt"
SETUP_PACKAGE = "workflow.tar.gz"
REQUIREMENTS_FILE = "requirements.txt"
PICKLED_MAIN_SESSION = "pickled_main_session"
# Staged for the runner's information only, or provided by the worker itself.
_NOT_INSTALLED = frozenset(
    {"submission_environment_dependencies.txt", "dataflow_python_sdk.tar", PICKLED_MAIN_SESSION}
)
_PIP_TIMEOUT_SECONDS = 900
# Environments whose SDK harness runs in the worker's process (or a child it starts itself).
IN_PROCESS_URNS = frozenset(
    {python_urns.EMBEDDED_PYTHON, python_urns.EMBEDDED_PYTHON_GRPC, python_urns.SUBPROCESS_SDK}
)


def staged_file_name(artifact: beam_runner_api_pb2.ArtifactInformation) -> str:
    """The file name an artifact is materialized under, as Beam's boot names it."""
    if artifact.role_urn == common_urns.artifact_roles.STAGING_TO.urn:
        payload = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload)
        return payload.staged_name
    digest = hashlib.sha256(artifact.SerializeToString(deterministic=True)).hexdigest()
    if artifact.role_urn == common_urns.artifact_roles.PIP_REQUIREMENTS_FILE.urn:
        return f"requirements-{digest[:16]}.txt"
    return digest


class InstallFailed(Exception):
    """pip could not install the job's packages; the message has pip's own explanation."""


@dataclass
class StagedFiles:
    """A directory of materialized artifacts and what Beam's roles make of them."""

    directory: Path
    names: list[str]
    requirements: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls, directory: Path, artifacts: Iterable[beam_runner_api_pb2.ArtifactInformation]
    ) -> StagedFiles:
        staged = cls(directory, [])
        for artifact in artifacts:
            name = staged_file_name(artifact)
            staged.names.append(name)
            if artifact.role_urn == common_urns.artifact_roles.PIP_REQUIREMENTS_FILE.urn:
                staged.requirements.append(name)
        if REQUIREMENTS_FILE in staged.names:
            staged.requirements.insert(0, REQUIREMENTS_FILE)
        return staged

    @property
    def main_session(self) -> Path | None:
        path = self.directory / PICKLED_MAIN_SESSION
        return path if PICKLED_MAIN_SESSION in self.names else None

    def packages(self) -> list[str]:
        """Extra packages in the order the user listed them, then the setup package."""
        listed: list[str] = []
        if EXTRA_PACKAGES_FILE in self.names:
            text = (self.directory / EXTRA_PACKAGES_FILE).read_text()
            listed = [line.strip() for line in text.splitlines() if line.strip()]
        if SETUP_PACKAGE in self.names:
            listed.append(SETUP_PACKAGE)
        return [str(self.directory / name) for name in listed]

    def describe(self) -> str:
        shown = [n for n in self.names if n not in _NOT_INSTALLED and n != EXTRA_PACKAGES_FILE]
        return ", ".join(shown) or "nothing to install"


def site_directory(prefix: Path) -> Path:
    return Path(sysconfig.get_path("purelib", "posix_prefix", {"base": str(prefix)}))


def install(staged: StagedFiles, prefix: Path) -> Path | None:
    """pip-install the staged packages under `prefix`; return the directory to import from
    (None when there was nothing to install). Raises InstallFailed."""
    packages = staged.packages()
    requirements = [str(staged.directory / name) for name in staged.requirements]
    if not packages and not requirements:
        return None
    target = site_directory(prefix)
    pip = _Pip(prefix, staged.directory, target)
    if packages:
        pip.run("--no-index", "--no-deps", "--force-reinstall", *packages)
    if requirements:
        # Offline first: what the SDK staged is all most jobs need.
        pip.run("--no-index", "--no-deps", *_each("-r", requirements), check=False)
    # Then dependencies, from the index only if something is still missing (a no-op else).
    pip.run(*packages, *_each("-r", requirements))
    return target


def activate(site_dir: Path) -> None:
    """Make packages under `site_dir` importable here (first, ahead of the worker's own) and in
    any process started from here (SDK harness subprocesses)."""
    site.addsitedir(str(site_dir))
    sys.path.remove(str(site_dir))
    sys.path.insert(0, str(site_dir))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(site_dir), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    importlib.invalidate_caches()


def _each(flag: str, values: list[str]) -> list[str]:
    return [part for value in values for part in (flag, value)]


@dataclass
class _Pip:
    prefix: Path
    find_links: Path
    site_dir: Path

    def run(self, *args: str, check: bool = True) -> None:
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            # Builds use the worker's setuptools: offline, and no build environment per package.
            "--no-build-isolation",
            "--prefix",
            str(self.prefix),
            "--find-links",
            str(self.find_links),
            *args,
        ]
        # pip sees what earlier rounds installed, so it does not install it again.
        env = {**os.environ, "PYTHONPATH": str(self.site_dir)}
        done = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=_PIP_TIMEOUT_SECONDS,
            check=False,
        )
        if done.returncode != 0 and check:
            raise InstallFailed(
                f"installing the job's staged packages failed: {' '.join(command[2:])}\n"
                f"{done.stdout[-4000:]}{done.stderr[-4000:]}"
            )
        logger.info("pip %s: exit %d", " ".join(args), done.returncode)
