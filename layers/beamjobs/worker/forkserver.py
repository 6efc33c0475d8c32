"""The fork server: one process that imports Beam once, then forks a fresh worker per job.

Importing apache_beam costs about a second; a fork costs milliseconds. The server itself never
runs a job, opens a connection or starts a thread (forking is only safe that way), so every
child starts from the same pristine state: nothing of one job (modules it imported, environment
variables, temporary files, threads) can reach another. Each child runs in a session of its own,
so stopping a job stops its whole process group.

Protocol (one line each): stdin `run <job id>`; stdout `started <job id> <pid>` and
`exited <pid> <exit code, negative for a signal>`.
"""

from __future__ import annotations

import os
import select
import signal
import sys

from beamjobs import runtime
from beamjobs.settings import Settings

# Imports Beam and FnApiRunner: children inherit them already imported.
from beamjobs.worker.run import run_job

_REAP_INTERVAL_SECONDS = 0.1


def _child(job_id: str) -> None:
    """In the forked child: leave the server's session and pipes, run the job, exit."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stdout is the server's protocol pipe: the job's output goes to stderr
    code = 1
    try:
        code = run_job(job_id)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(out) -> None:  # type: ignore[no-untyped-def]
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        out.write(f"exited {pid} {os.waitstatus_to_exitcode(status)}\n")
        out.flush()


def serve() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the shim's Ctrl-C is for the shim
    # Building AWS clients loads their service models (~0.3 s each); children inherit them.
    # Nothing is sent here, so no connection exists yet to be shared across a fork.
    runtime.stores(Settings.from_env())
    out = sys.stdout
    pending = b""
    while True:
        ready, _, _ = select.select([0], [], [], _REAP_INTERVAL_SECONDS)
        _reap(out)
        if not ready:
            continue
        chunk = os.read(0, 4096)
        if not chunk:
            return  # the executor is gone; running jobs go on in their own sessions
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            command, _, job_id = line.decode().partition(" ")
            if command != "run" or not job_id:
                continue
            pid = os.fork()
            if pid == 0:
                _child(job_id)
            out.write(f"started {job_id} {pid}\n")
            out.flush()


if __name__ == "__main__":
    serve()
