"""The local executor: each job runs in its own worker process on this machine.

A watcher thread per job waits for the worker to exit (or for the job's timeout) and then
`settle`s the job, so a worker that crashed or was stopped still ends in a terminal state.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading

from beamjobs.executor import ExecutorError, settle
from beamjobs.options import JOB_TIMEOUT_SECONDS, read_option
from beamjobs.settings import Settings
from beamjobs.store import Job, JobStore

logger = logging.getLogger(__name__)

# After SIGTERM, a worker has this long to end before it is killed.
_STOP_GRACE_SECONDS = 5.0


class ProcessExecutor:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self._settings = settings
        self._store = store
        self._workers: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def start(self, job: Job) -> None:
        options = json.loads(job.options_json) if job.options_json else {}
        timeout = read_option(options, JOB_TIMEOUT_SECONDS)
        env = {**os.environ, **self._settings.to_env()}
        try:
            # A session of its own, so stopping the job also stops any SDK harness it spawned.
            process = subprocess.Popen(
                [sys.executable, "-m", "beamjobs.worker", job.job_id],
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            raise ExecutorError(f"worker process did not start: {error}") from error
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

    def running_jobs(self) -> list[str]:
        with self._lock:
            return list(self._workers)

    def _watch(self, job_id: str, process: subprocess.Popen[bytes], timeout: float) -> None:
        try:
            code = process.wait(timeout=timeout)
            cause = f"the worker exited with code {code} before recording the job's outcome"
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
            cause = f"the job timed out after {timeout:g} s (--{JOB_TIMEOUT_SECONDS.name})"
        else:
            # The worker is gone but may have left SDK harness processes behind.
            _signal_group(process, signal.SIGKILL)
        with self._lock:
            self._workers.pop(job_id, None)
        try:
            settle(self._store, job_id, cause)
        except Exception:  # a watcher thread has no caller to raise to: log it, loudly
            logger.exception("could not record the end of job %s (%s)", job_id, cause)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    if sig is signal.SIGTERM:
        threading.Timer(_STOP_GRACE_SECONDS, _signal_group, (process, signal.SIGKILL)).start()
