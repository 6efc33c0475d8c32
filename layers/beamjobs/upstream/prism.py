"""Beam's Prism runner as a process of a mirror's own: the built-in `prism` engine
(beamjobs.domain.engines). Prism keeps its jobs in memory, so each job gets a Prism of its own,
on loopback, that lives and dies with the job's mirror (it is in the mirror's process group,
which the executor stops as one); a mirror started again finds its job forgotten there, and
the job ends as engine lost.

The mirror of a job on it runs with the workers' interpreter (on AWS, in the worker's image and
task), so the job's own worker starts Prism. Prism runs no EMBEDDED environment, and without a
container runtime no DOCKER one, so the mirror hands it the job's EMBEDDED Python environments,
and DOCKER ones of the workers' own SDK image, as PROCESS ones: Beam's Python boot program (the
SDK image's entry point, built by `make engines`, in the worker image at /opt/apache/beam/boot)
run with the workers' interpreter, which installs the job's staged packages and starts the SDK
harness, as the image would (`runnable_on_prism`)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from beamjobs.api import pipeline_pb2
from beamjobs.domain.errors import Unavailable
from beamjobs.pipeline.environments import DOCKER, EMBEDDED, PROCESS
from beamjobs.pipeline.sdk_images import PythonSdkImage, classify
from beamjobs.upstream.client import UpstreamError

logger = logging.getLogger(__name__)

START_SECONDS = 60.0
STOP_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def local_prism(binary: str) -> Iterator[str]:
    """Start Prism (`binary`), answering its Job API on a free loopback port, and yield that
    endpoint; Unavailable when it does not start answering within START_SECONDS."""
    port = _free_port()
    process = subprocess.Popen(
        [binary, f"--job_port={port}", "--serve_http=false", "--log_level=warn"],
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_until_listening(process, port)
        logger.info("Prism (pid %d) listening on 127.0.0.1:%d", process.pid, port)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_listening(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"Prism exited at start with code {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise Unavailable(f"Prism did not listen on port {port} within {START_SECONDS:g} s")


# Run in place of Beam's boot: Prism 2.77 quotes each flag's value as for a shell, and execs
# with none, so the harness would present a worker id with quotes in it, which Prism does not
# know. The boot's files (its semi-persistent ones, and the pipeline_options.json it writes where
# it runs) go to the job's own directory.
_LAUNCHER = """\
#!{python}
import os, sys
flags = [flag.replace("'", "") for flag in sys.argv[1:]]
os.chdir({directory!r})
os.execv({boot!r}, [{boot!r}, *flags, "--semi_persist_dir={directory}"])
"""


@dataclass(frozen=True)
class ProcessHarness:
    """How Prism starts a job's Python SDK harness: the command, and its environment."""

    command: str
    env: dict[str, str]


# What the workers' interpreter says of itself: where its packages are, and its Python and Beam
# releases (asked of it, as the mirror imports no Beam).
_DESCRIBE = (
    "import sys, sysconfig; from importlib.metadata import version; "
    "print(sysconfig.get_paths()['purelib'], '%d.%d' % sys.version_info[:2], "
    "version('apache-beam'))"
)


@dataclass(frozen=True)
class WorkerPython:
    """The interpreter a job's harnesses run with: the workers' (on AWS, the worker image's)."""

    executable: str
    packages: str  # its site-packages, Beam's and the SDK image's packages among them
    python: str  # e.g. "3.11"
    beam: str  # e.g. "2.77.0"

    @classmethod
    def of(cls, executable: str) -> WorkerPython:
        said = subprocess.run(
            [executable, "-c", _DESCRIBE], capture_output=True, text=True, check=True
        ).stdout.split()
        packages, python, beam = said
        return cls(executable, packages, python, beam)

    def is_own_image(self, image: str) -> bool:
        """Whether `image` is Beam's Python SDK image of this interpreter's Python and Beam
        releases: what the worker image is built FROM, so its harness can run here as is."""
        sdk = classify(image)
        return isinstance(sdk, PythonSdkImage) and (sdk.python, sdk.beam) == (
            self.python,
            self.beam,
        )


def process_harness(directory: Path, boot: str, worker: WorkerPython) -> ProcessHarness:
    """A harness of Beam's Python `boot` for one job, its files in `directory`: run in a
    virtualenv of the job's own (so the packages it stages install there, not into the
    workers' environment), which sees the workers' packages (Beam's, the SDK image's) first."""
    venv = directory / "venv"
    subprocess.run([worker.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    launcher = directory / "boot"
    python = venv / "bin" / "python"
    launcher.write_text(_LAUNCHER.format(python=python, boot=boot, directory=str(directory)))
    launcher.chmod(0o755)
    env = {
        # The boot runs the harness with the `python` found first on PATH, the job's.
        "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT": "1",
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": worker.packages,
    }
    return ProcessHarness(str(launcher), env)


def process_environments(pipeline: bytes, env_ids: set[str], harness: ProcessHarness) -> bytes:
    """The pipeline with the environments `env_ids` as PROCESS ones, started as `harness`."""
    proto = pipeline_pb2.Pipeline.FromString(pipeline)
    payload = pipeline_pb2.ProcessPayload(
        command=harness.command, env=harness.env
    ).SerializeToString()
    for env_id in env_ids:
        environment = proto.components.environments[env_id]
        environment.urn = PROCESS
        environment.payload = payload
    return bytes(proto.SerializeToString())


def runnable_on_prism(pipeline: bytes, directory: Path, boot: str, worker_python: str) -> bytes:
    """The pipeline as Prism can run it, here, without a container runtime: its EMBEDDED
    environments, and DOCKER ones of the workers' own SDK image, as PROCESS ones started by
    Beam's boot with the workers' interpreter (the harness, process_harness, is made only for a
    pipeline that has such an environment). UpstreamError (FAILED_PRECONDITION) for a DOCKER
    environment of any other image, which Prism could only run in a container."""
    environments = pipeline_pb2.Pipeline.FromString(pipeline).components.environments
    if all(environment.urn not in (EMBEDDED, DOCKER) for environment in environments.values()):
        return pipeline
    worker = WorkerPython.of(worker_python)
    images = {
        env_id: pipeline_pb2.DockerPayload.FromString(environment.payload).container_image
        for env_id, environment in environments.items()
        if environment.urn == DOCKER
    }
    others = {env_id: image for env_id, image in images.items() if not worker.is_own_image(image)}
    if others:
        own = f"apache/beam_python{worker.python}_sdk:{worker.beam}"
        named = ", ".join(f"{env_id} ({image})" for env_id, image in sorted(others.items()))
        raise UpstreamError(
            "FAILED_PRECONDITION",
            f"Prism runs here without containers, so of DOCKER environments only {own} (the "
            f"workers' own) runs, as Beam's boot; not {named}: submit with that image, or "
            "with --environment_type=LOOPBACK (your SDK process runs the user code)",
        )
    env_ids = set(images) | {
        env_id for env_id, environment in environments.items() if environment.urn == EMBEDDED
    }
    return process_environments(pipeline, env_ids, process_harness(directory, boot, worker))
