"""Stand-ins for Beam's Python SDK images where no container runtime exists: for
`apache/beam_python3.X_sdk:V`, a virtualenv of Python 3.X with what that image installs, built
on first use and cached by (Python, Beam) version. Its SDK harness then runs as a PROCESS
environment, started by `beamjobs.worker.boot` with the virtualenv's own interpreter, so a job
submitted by Beam 2.50 runs its user code under Beam 2.50, as in the 2.50 container.

Building happens under an exclusive file lock (jobs needing the same image wait for one build,
across processes) into the virtualenv's final directory; a marker written last makes it usable,
so a build that failed or was killed midway is removed and made again, never used.

This module imports no Beam: it runs in the worker before any harness exists.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from beamjobs.pipeline.sdk_images import PythonSdkImage, classify

# What Beam's Python SDK images install (sdks/python/container in apache/beam): apache-beam
# with these extras, plus the manual list of packages the containers add.
IMAGE_EXTRAS = ("gcp", "test", "dataframe")
IMAGE_MANUAL_PACKAGES = (
    "bs4",
    "cython>=3,<4",
    "future",
    "google-cloud-profiler",
    "guppy3",
    "mmh3",
    "nltk",
    "nose==1.3.7",
    "google-crc32c",
    "scipy",
    "scikit-learn",
    "build>=1.0,<2",
)
# Staged packages are built without build isolation (beamjobs.worker.packages): setuptools
# older than 70.1 cannot build wheels without the `wheel` package, which no virtualenv has, and
# from 80 on it lacks pkg_resources, which Beam releases before 2.60 import.
BUILD_TOOLS = ("setuptools>=70.1,<80",)
_COMPLETE = ".beamjobs-complete"
# The boot command needs only this package's boot modules, never the worker's own packages.
_BOOT_PATH = "beamjobs-boot"
_PIP_TIMEOUT_SECONDS = 1800
# This interpreter's Python version, as Beam's image names write it (e.g. "3.11").
THIS_PYTHON = "{}.{}".format(*sys.version_info[:2])
_OUTPUT_TAIL_CHARACTERS = 3000

Report = Callable[[str], None]


class UnrunnableEnvironment(Exception):
    """An environment this worker cannot run; the message says why and what to use instead."""


def image_requirements(beam_version: str) -> list[str]:
    """The pip requirements of a Beam Python SDK image of this Beam release."""
    return [f"apache-beam[{','.join(IMAGE_EXTRAS)}]=={beam_version}", *IMAGE_MANUAL_PACKAGES]


def find_python(version: str) -> str | None:
    """An interpreter of Python `version` (e.g. "3.11") on this machine that really runs (a
    version manager's shim for a version it does not have fails), or None."""
    if version == THIS_PYTHON:
        return getattr(sys, "_base_executable", None) or sys.executable
    candidate = shutil.which(f"python{version}")
    if candidate is None:
        return None
    try:
        done = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return candidate if done.returncode == 0 and done.stdout.strip() == version else None


Build = Callable[[Path, str, PythonSdkImage], None]


class ImageEnvironments:
    """The cache of stand-in virtualenvs, in one directory shared by the machine's workers.
    `build` makes one into an empty directory (tests replace it)."""

    def __init__(self, directory: Path, build: Build | None = None) -> None:
        # Absolute: the stand-ins record paths inside themselves (their boot path).
        self._directory = directory.resolve()
        self._build = build or build_virtualenv

    def python_for(self, image: PythonSdkImage, report: Report) -> Path:
        """The interpreter of the image's stand-in, built now if needed (reporting progress).
        Raises UnrunnableEnvironment, naming the image, when it cannot be had."""
        interpreter = find_python(image.python)
        if interpreter is None:
            raise UnrunnableEnvironment(
                f"the SDK image {image.image} is Python {image.python}, and this machine has no "
                f"python{image.python} to build its environment with: install Python "
                f"{image.python}, or submit from an SDK on Python {THIS_PYTHON}, or use "
                "--environment_type=LOOPBACK (your SDK process runs the user code)"
            )
        target = self._directory / f"python{image.python}-beam{image.beam}"
        with self._locked(target, image, report):
            if not (target / _COMPLETE).exists():
                report(
                    f"building the environment of {image.image} (its first use here): Python "
                    f"{image.python} with {image_requirements(image.beam)[0]} and the image's "
                    "packages; this takes minutes, and later jobs reuse it"
                )
                started = time.monotonic()
                shutil.rmtree(target, ignore_errors=True)  # a build that never completed
                target.mkdir()
                self._build(target, interpreter, image)
                (target / _COMPLETE).write_text(f"{image.image}\n")
                report(
                    f"built the environment of {image.image} in {time.monotonic() - started:.0f} s"
                )
        return target / "bin" / "python"

    @contextmanager
    def _locked(self, target: Path, image: PythonSdkImage, report: Report) -> Iterator[None]:
        self._directory.mkdir(parents=True, exist_ok=True)
        with open(target.with_name(target.name + ".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report(f"waiting for another job's build of the environment of {image.image}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def build_virtualenv(target: Path, interpreter: str, image: PythonSdkImage) -> None:
    """Make `target` a virtualenv of `interpreter` with what the image installs, and with
    `beamjobs.worker.boot` importable (and nothing else of the worker's)."""
    requirements = image_requirements(image.beam)
    _run([interpreter, "-m", "venv", str(target)], image, "creating its virtualenv")
    python = str(target / "bin" / "python")
    _run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--no-input",
            "--retries",
            "2",
            *requirements,
            *BUILD_TOOLS,
        ],
        image,
        f"installing {' '.join(requirements)} from the package index",
    )
    boot_path = target / _BOOT_PATH
    boot_path.mkdir()
    (boot_path / "beamjobs").symlink_to(Path(__file__).resolve().parents[1])
    site_packages = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        image,
        "finding its site-packages",
    ).splitlines()[-1]
    Path(site_packages, "beamjobs-boot.pth").write_text(f"{boot_path}\n")
    version = _run(
        [python, "-W", "ignore", "-c", "import apache_beam; print(apache_beam.__version__)"],
        image,
        "importing apache_beam",
    ).splitlines()[-1]
    if version != image.beam:
        raise UnrunnableEnvironment(
            f"the environment built for {image.image} has Beam {version}, not {image.beam}"
        )


def _run(command: list[str], image: PythonSdkImage, doing: str) -> str:
    """The command's output (stdout and stderr, as one); UnrunnableEnvironment if it fails."""
    # The worker's PYTHONPATH may hold a job's packages: the stand-in must not see them.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    with tempfile.TemporaryFile("w+") as output:
        try:
            code: int | str = subprocess.run(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
                timeout=_PIP_TIMEOUT_SECONDS,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            code = f"timed out after {_PIP_TIMEOUT_SECONDS} s"
        output.seek(0)
        text = output.read()
    if code != 0:
        # pip warns once per package about configured find-links that do not exist: noise.
        lines = [line for line in text.splitlines() if not line.startswith("WARNING: Location")]
        raise UnrunnableEnvironment(
            f"building the environment of {image.image} failed while {doing} (exit {code}); "
            "is the package index reachable from the worker, and does it have these "
            f"packages?\n{chr(10).join(lines)[-_OUTPUT_TAIL_CHARACTERS:]}\n"
            "Instead, submit with --environment_type=LOOPBACK (your SDK process runs the user "
            "code), or with the worker's own Beam version, whose image runs in process"
        )
    return text


def main(argv: list[str]) -> None:
    """`python -m beamjobs.worker.image_environments` with
    - `requirements 2.77.0`: that release's image requirements, one per line (how
      `make worker-lock` re-pins the workers' own environment);
    - `tools`: the build tools every worker environment gets;
    - `build IMAGE DIRECTORY`: the stand-in of a Beam Python SDK image, built into the cache
      at DIRECTORY ahead of the jobs that will need it, exactly as a worker builds it."""
    command, *args = argv
    if command == "tools":
        print("\n".join(BUILD_TOOLS))
    elif command == "requirements":
        print("\n".join(image_requirements(args[0])))
    elif command == "build":
        image = classify(args[0])
        if not isinstance(image, PythonSdkImage):
            raise SystemExit(f"{args[0]} is not one of Beam's Python SDK images")
        print(ImageEnvironments(Path(args[1])).python_for(image, print))
    else:
        raise SystemExit(f"unknown command {command!r}: requirements, tools or build")


if __name__ == "__main__":
    main(sys.argv[1:])
