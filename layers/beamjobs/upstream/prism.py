"""Beam's Prism runner as a process of a mirror's own: the built-in `prism` engine
(beamjobs.domain.engines). Prism keeps its jobs in memory, so each job gets a Prism of its own,
on loopback, that lives and dies with the job's mirror (it is in the mirror's process group,
which the executor stops as one); a mirror started again finds its job forgotten there, and
the job ends as engine lost."""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from collections.abc import Iterator

from beamjobs.domain.errors import Unavailable

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
