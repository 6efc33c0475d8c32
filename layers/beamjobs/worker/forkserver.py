"""The fork server: one process that imports Beam once and keeps a few workers forked from it
ahead of need (the warm pool), each waiting for a job.

Importing apache_beam costs about a second; a fork costs milliseconds, and a warm worker has
made its set-up and its first AWS calls before its job arrives, so a job starts at once; each
inherits Beam's caches filled by the one trivial pipeline of its own that the server runs at
its start (beamjobs.worker.warm_up). The server itself never runs a job, opens a connection or
keeps a thread (forking is only safe that way: it checks that the warm-up's have all ended),
and a worker runs one job and exits: every worker starts from the same pristine state, so
nothing of one job (modules it imported, environment variables, temporary files, threads) can
reach another. Each worker runs in a session of its own, so stopping a job stops its whole
process group. A warm worker that dies while waiting is replaced, as is each one handed a job,
once the server has been idle for a moment. When the executor is gone (end of file on stdin),
running workers go on, for a server that takes over to adopt, unless they stop with the server
(BEAMJOBS_STOP_WITH_SERVER: it owned the AWS they report to); then they are stopped as a stop of
their jobs would.

Protocol (one line each): stdin `run <its worker secret> <the started job as JSON>` (the job
keeps only its secret's hash); stdout
`started <job id> <pid>` and `exited <pid> <exit code, negative for a signal>`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from typing import TextIO

from beamjobs.domain.executor import STOP_GRACE_SECONDS
from beamjobs.domain.model import job_from_json
from beamjobs.settings import Settings
from beamjobs.startup import started
from beamjobs.worker.channel import channel_invokers

# Imports Beam and FnApiRunner: workers inherit them already imported.
from beamjobs.worker.run import JobRunner
from beamjobs.worker.warm_up import warm_up

_REAP_INTERVAL_SECONDS = 0.1


def _read_line(fd: int) -> bytes:
    """Bytes up to a newline, or what came before end of file."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.strip()


def _worker(job_pipe: int, inherited: list[int]) -> None:
    """In a forked worker: leave the server's session and pipes, get ready, wait for the job,
    run it, exit. End of file instead of a job means the server is gone: exit."""
    os.setsid()
    for fd in inherited:  # other workers' job pipes: their end of file must not wait for us
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stdout is the server's protocol pipe: the job's output goes to stderr
    code = 1
    try:
        runner = JobRunner()  # made while waiting, so the job finds its client ready
        line = _read_line(job_pipe)
        if not line:
            code = 0
            return
        secret, _, job_json = line.decode().partition(" ")
        job = job_from_json(job_json)
        code = runner.run(job.job_id, known=job, secret=secret)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class WarmPool:
    """Workers forked and waiting, by pid, with the pipe each waits on for its job."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._waiting: dict[int, int] = {}

    def refill(self) -> None:
        while len(self._waiting) < self._size:
            pid, pipe = self._fork()
            self._waiting[pid] = pipe

    def hand_over(self, work: str) -> int:
        """Give the work (`<secret> <job JSON>`) to a waiting worker (a new one if none waits);
        return its pid."""
        while True:
            if self._waiting:
                pid = next(iter(self._waiting))
                pipe = self._waiting.pop(pid)
            else:
                pid, pipe = self._fork()
            try:
                os.write(pipe, work.encode() + b"\n")
                return pid
            except BrokenPipeError:
                continue  # it died while waiting: the next one
            finally:
                os.close(pipe)

    def forget(self, pid: int) -> None:
        """A worker exited; if it was still waiting, it will be replaced."""
        pipe = self._waiting.pop(pid, None)
        if pipe is not None:
            os.close(pipe)

    def _fork(self) -> tuple[int, int]:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(write_end)
            _worker(read_end, list(self._waiting.values()))
        os.close(read_end)
        return pid, write_end


def _reap(pool: WarmPool, running: set[int], out: TextIO) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        pool.forget(pid)
        running.discard(pid)
        out.write(f"exited {pid} {os.waitstatus_to_exitcode(status)}\n")
        out.flush()


def _stop(running: set[int]) -> None:
    """Stop the running workers' process groups: SIGTERM, then SIGKILL for those that outlast
    the grace period (as the executor's own stop of them)."""

    def signal_all(sig: signal.Signals) -> None:
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while running and time.monotonic() < deadline:
        running.difference_update(pid for pid in list(running) if os.waitpid(pid, os.WNOHANG)[0])
        time.sleep(_REAP_INTERVAL_SECONDS)
    signal_all(signal.SIGKILL)
    for pid in running:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def serve() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the shim's Ctrl-C is for the shim
    settings = Settings.from_env(worker=True)
    # Building an AWS client loads its service model (~0.3 s); workers inherit it. Nothing is
    # sent here, so no connection exists yet to be shared across a fork.
    channel_invokers(settings)
    warm_up()
    if threading.active_count() != 1:
        raise RuntimeError(
            f"threads alive after the warm-up, unsafe to fork: {threading.enumerate()}"
        )
    started()
    pool = WarmPool(settings.warm_workers)
    pool.refill()
    running: set[int] = set()  # the workers handed a job, until they exit
    out = sys.stdout
    pending = b""
    while True:
        ready, _, _ = select.select([0], [], [], _REAP_INTERVAL_SECONDS)
        _reap(pool, running, out)
        if not ready:
            # Idle: refill now, so that a new worker's fork and warm-up do not compete with
            # the job just handed over while it starts.
            pool.refill()
        else:
            chunk = os.read(0, 65536)
            if not chunk:  # the executor is gone
                if settings.stop_with_server:
                    _stop(running)
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                command, _, work = line.decode().partition(" ")
                job_json = work.partition(" ")[2]
                if command != "run" or not job_json:
                    continue
                pid = pool.hand_over(work)
                running.add(pid)
                out.write(f"started {job_from_json(job_json).job_id} {pid}\n")
                out.flush()


if __name__ == "__main__":
    serve()
