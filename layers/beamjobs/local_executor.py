"""The local executor: each job runs in its own worker process on this machine.

A pool keeps a few workers started ahead of time ("warm": Beam imported, AWS clients built,
waiting for a job id on standard input), because importing Beam alone costs about a second. A
job is handed to a warm worker; the pool refills in the background and replaces warm workers that
died. A worker runs one job and exits, so jobs never share a process.

A watcher thread per job waits for the worker to exit (or for the job's timeout) and then
`settle`s the job, so a worker that crashed or was stopped still ends in a terminal state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading

from beamjobs.errors import BeamjobsError
from beamjobs.executor import ExecutorError, settle
from beamjobs.options import JOB_TIMEOUT_SECONDS, read_option
from beamjobs.reconcile import fail_lost_jobs
from beamjobs.settings import Settings
from beamjobs.store import Job, JobStore

logger = logging.getLogger(__name__)

# After SIGTERM, a worker has this long to end before it is killed.
_STOP_GRACE_SECONDS = 5.0
# How often the pool checks for dead warm workers.
_POOL_CHECK_SECONDS = 1.0

Process = subprocess.Popen[bytes]


class WarmPool:
    """Worker processes started ahead of jobs, each waiting for one job id on stdin."""

    def __init__(self, settings: Settings, size: int) -> None:
        self._env = {**os.environ, **settings.to_env()}
        self._size = size
        self._idle: list[Process] = []
        self._lock = threading.Lock()
        self._refill_needed = threading.Event()
        self._closed = threading.Event()
        if size > 0:
            threading.Thread(target=self._keep_full, name="warm-pool", daemon=True).start()
            self._refill_needed.set()

    def take(self) -> Process:
        """A live warm worker if one is ready, else a fresh one (it warms up on its own)."""
        with self._lock:
            while self._idle:
                process = self._idle.pop(0)
                if process.poll() is None:
                    break
            else:
                process = None
        self._refill_needed.set()
        return process if process is not None else self._spawn()

    def close(self) -> None:
        self._closed.set()
        self._refill_needed.set()
        with self._lock:
            idle, self._idle = self._idle, []
        for process in idle:
            _signal_group(process, signal.SIGKILL)

    def idle_count(self) -> int:
        with self._lock:
            return sum(1 for p in self._idle if p.poll() is None)

    def _spawn(self) -> Process:
        try:
            # A session of its own, so stopping the job also stops any SDK harness it spawned.
            return subprocess.Popen(
                [sys.executable, "-m", "beamjobs.worker"],
                env=self._env,
                stdin=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as error:
            raise ExecutorError(f"worker process did not start: {error}") from error

    def _keep_full(self) -> None:
        while not self._closed.is_set():
            self._refill_needed.wait(_POOL_CHECK_SECONDS)
            self._refill_needed.clear()
            with self._lock:
                self._idle = [p for p in self._idle if p.poll() is None]
                missing = self._size - len(self._idle)
            for _ in range(max(0, missing)):
                if self._closed.is_set():
                    return
                try:
                    process = self._spawn()
                except ExecutorError:
                    logger.exception("could not refill the warm pool")
                    break
                with self._lock:
                    self._idle.append(process)


class ProcessExecutor:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self._store = store
        self._pool = WarmPool(settings, settings.warm_workers)
        self._workers: dict[str, Process] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # Workers outlive a restarted shim, and a worker can hang: the same check that runs on
        # a schedule on AWS runs here too.
        threading.Thread(
            target=self._reconcile_periodically,
            args=(settings.lease_seconds,),
            name="reconcile",
            daemon=True,
        ).start()

    def start(self, job: Job) -> None:
        options = json.loads(job.options_json) if job.options_json else {}
        timeout = read_option(options, JOB_TIMEOUT_SECONDS)
        process = self._pool.take()
        try:
            assert process.stdin is not None
            process.stdin.write(f"{job.job_id}\n".encode())
            process.stdin.close()
        except OSError as error:  # the worker died between the check and the hand-over
            raise ExecutorError(f"could not hand the job to a worker: {error}") from error
        with self._lock:
            self._workers[job.job_id] = process
        threading.Thread(
            target=self._watch,
            args=(job.job_id, process, timeout),
            name=f"watch-{job.job_id}",
            daemon=True,
        ).start()

    def stop(self, job_id: str) -> None:
        with self._lock:
            process = self._workers.get(job_id)
        if process is None:
            # Not ours (started before a restart) or already gone: settle from the store.
            settle(self._store, job_id, "the worker is gone")
            return
        _signal_group(process, signal.SIGTERM)
        threading.Timer(_STOP_GRACE_SECONDS, _kill_if_running, (process,)).start()

    def close(self) -> None:
        """Stop the warm pool and the reconciler (running jobs go on to their end)."""
        self._closed.set()
        self._pool.close()

    def _reconcile_periodically(self, lease_seconds: float) -> None:
        while not self._closed.wait(max(1.0, lease_seconds / 3)):
            try:
                fail_lost_jobs(self._store, lease_seconds=lease_seconds)
            except BeamjobsError:
                logger.warning("reconciling lost workers failed", exc_info=True)

    def _watch(self, job_id: str, process: Process, timeout: float) -> None:
        try:
            code = process.wait(timeout=timeout)
            cause = _exit_cause(code)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
            cause = f"the job timed out after {timeout:g} s (--{JOB_TIMEOUT_SECONDS.name})"
        # The worker is gone but may have left SDK harness processes behind.
        _signal_group(process, signal.SIGKILL)
        with self._lock:
            self._workers.pop(job_id, None)
        try:
            settle(self._store, job_id, cause)
        except Exception:  # a watcher thread has no caller to raise to: log it, loudly
            logger.exception("could not record the end of job %s (%s)", job_id, cause)


def _exit_cause(code: int) -> str:
    if code < 0:
        return f"worker lost: the worker process was killed by {signal.Signals(-code).name}"
    return f"worker lost: the worker process exited with code {code} before recording an outcome"


def _signal_group(process: Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(process.pid, sig)


def _kill_if_running(process: Process) -> None:
    if process.poll() is None:
        _signal_group(process, signal.SIGKILL)
