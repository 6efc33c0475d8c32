"""Beam's Prism runner as a process of a mirror's own: the built-in `prism` engine
(beamjobs.domain.engines). Prism keeps its jobs in memory, so each job gets a Prism of its own,
on loopback, that lives and dies with the job's mirror (it is in the mirror's process group,
which the executor stops as one); a mirror started again finds its job forgotten there, and
the job ends as engine lost.

Prism runs no EMBEDDED environment, so the mirror hands it the job's EMBEDDED Python environments
as PROCESS ones: Beam's Python boot program (the SDK image's entry point, built by `make
engines`) run with the workers' own interpreter, which installs the job's staged packages and
starts the SDK harness, as the image would (`process_environments`)."""

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
from beamjobs.pipeline.environments import EMBEDDED, PROCESS

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
# know. The boot's files go to the job's own directory.
_LAUNCHER = """\
#!{python}
import os, sys
flags = [flag.replace("'", "") for flag in sys.argv[1:]]
os.execv({boot!r}, [{boot!r}, *flags, "--semi_persist_dir={directory}"])
"""


@dataclass(frozen=True)
class ProcessHarness:
    """How Prism starts a job's Python SDK harness: the command, and its environment."""

    command: str
    env: dict[str, str]


def process_harness(directory: Path, boot: str, worker_python: str) -> ProcessHarness:
    """A harness of Beam's Python `boot` for one job, its files in `directory`: run in a
    virtualenv of the job's own (so the packages it stages install there, not into the
    workers' environment), which sees the workers' packages (Beam's, the SDK image's) first."""
    venv = directory / "venv"
    subprocess.run([worker_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = subprocess.run(
        [worker_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    launcher = directory / "boot"
    python = venv / "bin" / "python"
    launcher.write_text(_LAUNCHER.format(python=python, boot=boot, directory=directory))
    launcher.chmod(0o755)
    env = {
        # The boot runs the harness with the `python` found first on PATH, the job's.
        "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT": "1",
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": packages,
    }
    return ProcessHarness(str(launcher), env)


def process_environments(pipeline: bytes, harness: ProcessHarness) -> bytes:
    """The pipeline with its EMBEDDED environments as PROCESS ones, started as `harness`."""
    proto = pipeline_pb2.Pipeline.FromString(pipeline)
    payload = pipeline_pb2.ProcessPayload(
        command=harness.command, env=harness.env
    ).SerializeToString()
    for environment in proto.components.environments.values():
        if environment.urn == EMBEDDED:
            environment.urn = PROCESS
            environment.payload = payload
    return bytes(proto.SerializeToString())


def embedded_as_process(pipeline: bytes, directory: Path, boot: str, worker_python: str) -> bytes:
    """The pipeline as Prism can run it: its EMBEDDED environments as PROCESS ones, with a
    harness (process_harness) made only for a pipeline that has such an environment."""
    environments = pipeline_pb2.Pipeline.FromString(pipeline).components.environments
    if all(environment.urn != EMBEDDED for environment in environments.values()):
        return pipeline
    return process_environments(pipeline, process_harness(directory, boot, worker_python))
