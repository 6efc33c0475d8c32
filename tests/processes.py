"""Beamjobs commands run in the background, as `make run` runs them (shared by the suites that
test through real processes; imports neither apache_beam nor the generated protos)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Servers run their workers from the workers' own virtualenv (the SDK image's packages), as
# `make run` does, and build stand-ins for other SDK images once per clone.
WORKER_PYTHON = os.environ.get("BEAMJOBS_WORKER_PYTHON") or str(ROOT / ".venv-worker/bin/python")
ENVIRONMENT_CACHE = ROOT / ".cache" / "environments"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A Beamjobs command running in the background, with its output in a log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._file = log.open("w")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "beamjobs.cli", *args],
            cwd=ROOT,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "BEAMJOBS_WORKER_PYTHON": WORKER_PYTHON,
                "BEAMJOBS_ENVIRONMENT_CACHE": str(ENVIRONMENT_CACHE),
                **(env or {}),
            },
        )

    def wait_for_port(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"exited early:\n{self.log.read_text()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"port {port} never opened:\n{self.log.read_text()}")

    def dashboard_url(self, timeout: float = 30) -> str:
        """Where the server's dashboard is, as it announced it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.read_text().splitlines():
                if line.startswith("Beamjobs dashboard on "):
                    return line.removeprefix("Beamjobs dashboard on ").strip()
            time.sleep(0.1)
        raise TimeoutError(f"no dashboard announced:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._file.close()


def serve(
    tmp: Path, name: str, port: int, *extra: str, env: dict[str, str] | None = None
) -> Process:
    server = Process(
        [
            "serve",
            "--host",
            "localhost",
            "--port",
            str(port),
            "--template",
            "template.yaml",
            # Any free port: servers run side by side.
            "--dashboard-port",
            "0",
            *extra,
        ],
        tmp / f"{name}.log",
        env,
    )
    server.wait_for_port(port)
    return server


def gone(pid: int) -> bool:
    """Whether the process `pid` has ended (a zombie, ended but not yet reaped, has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def processes_running(*words: str) -> set[int]:
    """The pids of the live processes whose command line has all of `words`."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if all(word in command for word in words) and not gone(int(entry.name)):
            pids.add(int(entry.name))
    return pids
