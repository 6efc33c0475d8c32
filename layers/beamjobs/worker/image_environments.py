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

from beamjobs.pipeline.sdk_images import OtherSdkImage, PythonSdkImage, classify
from beamjobs.worker.caches import owned_directory

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
# Constraints of a stand-in's build, where the project holds them (named as the stand-ins are):
# a resolution known to install, quickly and the same on every machine.
_PINS = Path(__file__).with_name("image_pins")
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


def image_pins(image: PythonSdkImage) -> Path | None:
    """The constraints the stand-in of this image is built with, if the project pins it."""
    pins = _PINS / f"python{image.python}-beam{image.beam}.txt"
    return pins if pins.exists() else None


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
BuildJava = Callable[[Path, OtherSdkImage], None]


class ImageEnvironments:
    """The cache of stand-in virtualenvs, in one directory shared by the machine's workers.
    `build` makes one into an empty directory (tests replace it)."""

    def __init__(
        self,
        directory: Path,
        build: Build | None = None,
        build_java: BuildJava | None = None,
    ) -> None:
        # Absolute: the stand-ins record paths inside themselves (their boot path).
        self._directory = directory.resolve()
        self._build = build or build_virtualenv
        self._build_java = build_java or build_java_harness

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
        self._cached(
            target,
            image.image,
            f"Python {image.python} with {image_requirements(image.beam)[0]} and the image's "
            "packages",
            lambda: self._build(target, interpreter, image),
            report,
        )
        return target / "bin" / "python"

    def java_jars_for(self, image: OtherSdkImage, report: Report) -> Path:
        """The directory of the jars of Beam's Java SDK harness of the image's release, fetched
        now if needed (reporting progress). Raises UnrunnableEnvironment, naming the image,
        when they cannot be had."""
        target = self._directory / f"java-beam{image.beam}"
        self._cached(
            target,
            image.image,
            f"Beam's Java SDK harness {image.beam} from Maven Central",
            lambda: self._build_java(target, image),
            report,
        )
        return target / "jars"

    def _cached(
        self, target: Path, image: str, what: str, build: Callable[[], None], report: Report
    ) -> None:
        """Build `target` once, under the machine-wide lock of its image."""
        with self._locked(target, image, report):
            if (target / _COMPLETE).exists():
                return
            report(
                f"building the environment of {image} (its first use here): {what}; this "
                "takes minutes, and later jobs reuse it"
            )
            started = time.monotonic()
            shutil.rmtree(target, ignore_errors=True)  # a build that never completed
            target.mkdir()
            build()
            (target / _COMPLETE).write_text(f"{image}\n")
            report(f"built the environment of {image} in {time.monotonic() - started:.0f} s")

    @contextmanager
    def _locked(self, target: Path, image: str, report: Report) -> Iterator[None]:
        owned_directory(self._directory)
        with open(target.with_name(target.name + ".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report(f"waiting for another job's build of the environment of {image}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def build_virtualenv(target: Path, interpreter: str, image: PythonSdkImage) -> None:
    """Make `target` a virtualenv of `interpreter` with what the image installs, and with
    `beamjobs.worker.boot` importable (and nothing else of the worker's)."""
    requirements = image_requirements(image.beam)
    pins = image_pins(image)
    constraints = ["--constraint", str(pins)] if pins else []
    _run([interpreter, "-m", "venv", str(target)], image.image, "creating its virtualenv")
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
            *constraints,
            *requirements,
            *BUILD_TOOLS,
        ],
        image.image,
        f"installing {' '.join(requirements)} from the package index",
    )
    boot_path = target / _BOOT_PATH
    boot_path.mkdir()
    (boot_path / "beamjobs").symlink_to(Path(__file__).resolve().parents[1])
    site_packages = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        image.image,
        "finding its site-packages",
    ).splitlines()[-1]
    Path(site_packages, "beamjobs-boot.pth").write_text(f"{boot_path}\n")
    version = _run(
        [python, "-W", "ignore", "-c", "import apache_beam; print(apache_beam.__version__)"],
        image.image,
        "importing apache_beam",
    ).splitlines()[-1]
    if version != image.beam:
        raise UnrunnableEnvironment(
            f"the environment built for {image.image} has Beam {version}, not {image.beam}"
        )


_PACKAGE_INDEX = (
    "is the package index reachable from the worker, and does it have these packages?",
    "or with the worker's own Beam version, whose image runs in process",
)


def _run(
    command: list[str],
    image: str,
    doing: str,
    where: tuple[str, str] = _PACKAGE_INDEX,
    cwd: Path | None = None,
) -> str:
    """The command's output (stdout and stderr, as one); UnrunnableEnvironment if it fails,
    asking the question and giving the way round that `where` names."""
    # The worker's PYTHONPATH may hold a job's packages: the stand-in must not see them.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    with tempfile.TemporaryFile("w+") as output:
        try:
            code: int | str = subprocess.run(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                text=True,
                timeout=_PIP_TIMEOUT_SECONDS,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            code = f"timed out after {_PIP_TIMEOUT_SECONDS} s"
        except FileNotFoundError:
            code = f"{command[0]} is not installed"
        output.seek(0)
        text = output.read()
    if code != 0:
        # pip warns once per package about configured find-links that do not exist: noise.
        lines = [line for line in text.splitlines() if not line.startswith("WARNING: Location")]
        question, otherwise = where
        raise UnrunnableEnvironment(
            f"building the environment of {image} failed while {doing} (exit {code}); "
            f"{question}\n{chr(10).join(lines)[-_OUTPUT_TAIL_CHARACTERS:]}\n"
            "Instead, submit with --environment_type=LOOPBACK (your SDK process runs the user "
            f"code), {otherwise}"
        )
    return text


# The stand-in of a Java SDK image: Beam's Java SDK harness, the agent the image starts it with,
# and the slf4j binding the image has (slf4j through java.util.logging, which the harness sends to
# the runner).
_JAVA_HARNESS_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>beamjobs.stand-in</groupId>
  <artifactId>java-harness</artifactId>
  <version>{beam}</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-sdks-java-harness</artifactId>
      <version>{beam}</version>
    </dependency>
    <dependency>
      <groupId>com.github.jbellis</groupId>
      <artifactId>jamm</artifactId>
      <version>0.4.0</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-jdk14</artifactId>
      <version>2.0.16</version>
    </dependency>
  </dependencies>
</project>
"""
_MAVEN = (
    "is Maven (`mvn`) installed on the worker, and is Maven Central reachable from it?",
    "which needs no harness jars on the worker",
)


def build_java_harness(target: Path, image: OtherSdkImage) -> None:
    """Put the jars of Beam's Java SDK harness of the image's release in `target`/jars."""
    (target / "pom.xml").write_text(_JAVA_HARNESS_POM.format(beam=image.beam))
    _run(
        [
            shutil.which("mvn") or "mvn",
            "--batch-mode",
            "--quiet",
            "--strict-checksums",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={target / 'jars'}",
            "-DincludeScope=runtime",
        ],
        image.image,
        f"fetching beam-sdks-java-harness {image.beam} from Maven Central",
        _MAVEN,
        cwd=target,
    )


def main(argv: list[str]) -> None:
    """`python -m beamjobs.worker.image_environments` with
    - `requirements 2.77.0`: that release's image requirements, one per line (how
      `make worker-lock` re-pins the workers' own environment);
    - `tools`: the build tools every worker environment gets;
    - `build IMAGE DIRECTORY`: the stand-in of a Beam Python or Java SDK image, built into the cache
      at DIRECTORY ahead of the jobs that will need it, exactly as a worker builds it."""
    command, *args = argv
    if command == "tools":
        print("\n".join(BUILD_TOOLS))
    elif command == "requirements":
        print("\n".join(image_requirements(args[0])))
    elif command == "build":
        image = classify(args[0])
        environments = ImageEnvironments(Path(args[1]))
        if isinstance(image, PythonSdkImage):
            print(environments.python_for(image, print))
        elif isinstance(image, OtherSdkImage) and image.language == "Java":
            print(environments.java_jars_for(image, print))
        else:
            raise SystemExit(f"{args[0]} is not one of Beam's Python or Java SDK images")
    else:
        raise SystemExit(f"unknown command {command!r}: requirements, tools or build")


if __name__ == "__main__":
    main(sys.argv[1:])
