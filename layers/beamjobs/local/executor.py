"""The local executor: each job runs in a worker process of its own on this machine, one of the
fork server's warm workers (see beamjobs.worker.forkserver), so a job starts in milliseconds
instead of paying Beam's import.

A watcher per job waits for its worker to exit (or for the job's timeout) and then `settle`s the
job, so a worker that crashed or was stopped still ends in a terminal state. A reconciler thread
fails jobs whose workers went silent (e.g. started by a shim that has since restarted).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from beamjobs.app.reconcile import fail_lost_jobs
from beamjobs.aws.invoker import Handler
from beamjobs.domain.blobs import BlobStore
from beamjobs.domain.engines import OWN_PRISM
from beamjobs.domain.errors import BeamjobsError
from beamjobs.domain.executor import STOP_GRACE_SECONDS, ExecutorError, Leases
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import ACTIVE_STATES, Job, job_to_json
from beamjobs.domain.options import JOB_TIMEOUT_SECONDS, job_options, read_option
from beamjobs.domain.store import JobStore
from beamjobs.domain.worker_secrets import worker_secret
from beamjobs.local.worker_channel import LocalWorkerChannel
from beamjobs.settings import Settings
from beamjobs.worker.channel import WORKER_FUNCTION

logger = logging.getLogger(__name__)

# How long a fork may take to be reported before the fork server is deemed broken.
_FORK_TIMEOUT_SECONDS = 30.0
# A mirror that died is started again after this long; one that died more than this many times
# within the window is lost.
_MIRROR_RESTART_SECONDS = 1.0
_MIRROR_DEATHS = 5
_MIRROR_DEATHS_WINDOW_SECONDS = 600.0


@dataclass
class Worker:
    """A forked worker: its pid (also its process group) and, once it ended, its exit code."""

    job_id: str
    pid: int
    exited: threading.Event = field(default_factory=threading.Event)
    code: int | None = None


class ForkServer:
    """Talks to a `beamjobs.worker.forkserver` process; restarts it when it died."""

    def __init__(self, settings: Settings, channel_url: str) -> None:
        self._env = worker_environment(settings, channel_url)
        self._python = settings.worker_python or sys.executable
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._started: dict[str, Worker | None] = {}
        self._by_pid: dict[int, Worker] = {}
        self._reported = threading.Condition(self._lock)

    def start(self) -> None:
        with self._lock:
            self._ensure_running()

    def fork(self, job: Job, secret: str) -> Worker:
        """Hand the started job, and its worker secret, to a warm worker."""
        job_id = job.job_id
        with self._lock:
            process = self._ensure_running()
            self._started[job_id] = None
            try:
                assert process.stdin is not None
                process.stdin.write(f"run {secret} {job_to_json(job)}\n")
                process.stdin.flush()
            except OSError as error:
                del self._started[job_id]
                raise ExecutorError(f"the fork server is gone: {error}") from error
            reported = self._reported.wait_for(
                lambda: self._started.get(job_id) is not None or process.poll() is not None,
                timeout=_FORK_TIMEOUT_SECONDS,
            )
            worker = self._started.pop(job_id, None)
        if not reported or worker is None:
            raise ExecutorError("the fork server did not start the worker")
        return worker

    def _ensure_running(self) -> subprocess.Popen[str]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [self._python, "-m", "beamjobs.worker.forkserver"],
                env=self._env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            threading.Thread(
                target=self._read, args=(self._process,), name="forkserver", daemon=True
            ).start()
        return self._process

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            kind, *words = line.split()
            with self._lock:
                if kind == "started":
                    job_id, pid = words[0], int(words[1])
                    worker = Worker(job_id, pid)
                    self._by_pid[pid] = worker
                    self._started[job_id] = worker
                    self._reported.notify_all()
                elif kind == "exited":
                    ended = self._by_pid.pop(int(words[0]), None)
                    if ended is not None:
                        ended.code = int(words[1])
                        ended.exited.set()
        # The fork server died: its children's exits can no longer be reported. They are in
        # sessions of their own and go on; their watchers fall back to checking their pids.
        with self._lock:
            orphans, self._by_pid = list(self._by_pid.values()), {}
            self._reported.notify_all()
        for worker in orphans:
            threading.Thread(target=_await_orphan, args=(worker,), daemon=True).start()


def worker_environment(settings: Settings, channel_url: str, **more: Any) -> dict[str, str]:
    """The environment of the workers: none of this process's settings (the table, the
    bucket, the AWS endpoint they are in), only what a worker needs and its channel (and the
    settings `more` names)."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name not in Settings.variables() and not name.startswith("AWS_ENDPOINT_URL")
    }
    worker = Settings(
        region=settings.region,
        endpoint_url=channel_url,
        worker_function=WORKER_FUNCTION,
        heartbeat_seconds=settings.heartbeat_seconds,
        warm_workers=settings.warm_workers,
        stop_with_server=settings.stop_with_server,
        artifact_cache_dir=settings.artifact_cache_dir,
        environment_cache_dir=settings.environment_cache_dir,
        **more,
    )
    return {**inherited, **worker.to_env()}


def mirror_environment(
    settings: Settings, channel_url: str, job: Job, secret: str, endpoint: str
) -> dict[str, str]:
    """A mirror's environment: a worker's, with its job's secret, its upstream engine (or the
    Prism it starts itself, whose harnesses run with the mirror's own interpreter, the
    workers'), and the lease and longest job time it enforces itself."""
    return worker_environment(
        settings,
        channel_url,
        worker_secret=secret,
        lease_seconds=settings.lease_seconds,
        max_job_seconds=settings.max_job_seconds,
        upstream_engine=job.engine,
        upstream_endpoint=endpoint,
        prism=settings.prism,
        python_boot=settings.python_boot,
        flink_rest=settings.flink_rest,
    )


class ProcessExecutor:
    name = "local"

    def __init__(
        self, settings: Settings, store: JobStore, blobs: BlobStore, worker_function: Handler
    ) -> None:
        """`worker_function`: the worker function's handler, which this process serves to its
        workers as their channel."""
        self._settings = settings
        self._store = store
        self._jobs = Jobs(store)
        self._max_job_seconds = settings.max_job_seconds
        self._blobs = blobs
        # The workers report through a channel this process serves, as through the worker
        # function on AWS.
        self.channel = LocalWorkerChannel(worker_function)
        self._forks = ForkServer(settings, self.channel.url)
        self._forks.start()
        self._workers: dict[str, Worker] = {}
        self._forking: set[str] = set()
        self._lock = threading.Lock()
        # Set once every worker is being stopped: mirrors are then not started again.
        self._stopping = threading.Event()
        # Workers outlive a restarted shim, and a worker can hang: the same check that runs on
        # a schedule on AWS runs here too.
        threading.Thread(
            target=self._reconcile_periodically,
            args=(settings.leases(),),
            name="reconcile",
            daemon=True,
        ).start()

    def start(self, job: Job) -> None:
        with self._lock:
            if job.job_id in self._workers or job.job_id in self._forking:
                return  # a retried Run: its worker is under way
            self._forking.add(job.job_id)
        try:
            # As on AWS, no job runs longer than the deployment's maximum.
            timeout = min(
                read_option(job_options(job, self._blobs), JOB_TIMEOUT_SECONDS),
                self._max_job_seconds,
            )
            worker = self._forks.fork(job, worker_secret(self._blobs, job.job_id))
            with self._lock:
                self._workers[job.job_id] = worker
        finally:
            with self._lock:
                self._forking.discard(job.job_id)
        threading.Thread(
            target=self._watch, args=(worker, timeout), name=f"watch-{job.job_id}", daemon=True
        ).start()

    def start_mirror(self, job: Job, endpoint: str) -> None:
        """Start the job's mirror towards `endpoint`: a process of the control plane's
        interpreter (it runs no pipeline), or, on the built-in Prism, of the workers' (as on
        AWS, where it runs in the worker's image: Prism's harnesses are the job's workers);
        started again whenever it dies before the job ends (it resumes where the job's log
        says it got to)."""
        with self._lock:
            if job.job_id in self._workers or job.job_id in self._forking:
                return  # a retried Run: its mirror is under way
            self._forking.add(job.job_id)
        try:
            secret = worker_secret(self._blobs, job.job_id)
            env = mirror_environment(self._settings, self.channel.url, job, secret, endpoint)
            python = sys.executable
            if endpoint == OWN_PRISM:
                python = self._settings.worker_python or sys.executable
            threading.Thread(
                target=self._keep_mirror,
                args=(job.job_id, python, env),
                name=f"mirror-{job.job_id}",
                daemon=True,
            ).start()
        finally:
            with self._lock:
                self._forking.discard(job.job_id)

    def _keep_mirror(self, job_id: str, python: str, env: dict[str, str]) -> None:
        """Run the mirror until it exits having recorded the job's end (or the job ended);
        a mirror that keeps dying at once is lost."""
        deaths: list[float] = []
        while True:
            process = subprocess.Popen(
                [python, "-m", "beamjobs.upstream.mirror", job_id],
                env=env,
                start_new_session=True,
            )
            worker = Worker(job_id, process.pid)
            with self._lock:
                self._workers[job_id] = worker
            worker.code = process.wait()
            worker.exited.set()
            with self._lock:
                self._workers.pop(job_id, None)
            if self._stopping.is_set() or worker.code == 0 or not self._active(job_id):
                return
            now = time.monotonic()
            deaths = [t for t in deaths if now - t < _MIRROR_DEATHS_WINDOW_SECONDS] + [now]
            if len(deaths) > _MIRROR_DEATHS:
                cause = f"mirror lost: it died {len(deaths)} times ({_exit_cause(worker.code)})"
                self._jobs.settle(job_id, cause)
                return
            logger.warning("the mirror of job %s died (%s): starting it again", job_id, worker.code)
            time.sleep(_MIRROR_RESTART_SECONDS)

    def _active(self, job_id: str) -> bool:
        """Whether the job is active (so, unsure, when its state cannot be read now)."""
        try:
            return self._store.get(job_id).state in ACTIVE_STATES
        except BeamjobsError:
            logger.warning("could not read job %s", job_id, exc_info=True)
            return True

    def running(self, job_id: str) -> bool:
        """Whether this executor's worker (or mirror) of the job is alive: a job it did not
        start (before a restart) has no work running."""
        with self._lock:
            worker = self._workers.get(job_id)
            return job_id in self._forking or (worker is not None and not worker.exited.is_set())

    def stop(self, job_id: str) -> None:
        with self._lock:
            worker = self._workers.get(job_id)
        if worker is None:
            # Not ours (started before a restart) or already gone: settle from the store.
            self._jobs.settle(job_id, "the worker is gone")
            return
        _signal_group(worker.pid, signal.SIGTERM)
        threading.Timer(STOP_GRACE_SECONDS, _kill_unless_exited, (worker,)).start()

    def stop_all(self) -> None:
        """Stop every worker this executor started (their whole process groups) and wait for
        them to end, killing those that outlast the grace period."""
        self._stopping.set()
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            _signal_group(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in workers:
            if not worker.exited.wait(max(0.0, deadline - time.monotonic())):
                _signal_group(worker.pid, signal.SIGKILL)

    def _watch(self, worker: Worker, timeout: float) -> None:
        if worker.exited.wait(timeout):
            cause = _exit_cause(worker.code)
        else:
            _signal_group(worker.pid, signal.SIGKILL)
            cause = f"the job timed out after {timeout:g} s (--{JOB_TIMEOUT_SECONDS.name})"
            worker.exited.wait(STOP_GRACE_SECONDS)
        # The worker is gone but may have left SDK harness processes behind.
        _signal_group(worker.pid, signal.SIGKILL)
        with self._lock:
            self._workers.pop(worker.job_id, None)
        try:
            self._jobs.settle(worker.job_id, cause)
        except Exception:  # a watcher thread has no caller to raise to: log it, loudly
            logger.exception("could not record the end of job %s (%s)", worker.job_id, cause)

    def _reconcile_periodically(self, leases: Leases) -> None:
        while True:
            time.sleep(max(1.0, leases.seconds / 3))
            try:
                fail_lost_jobs(self._store, self, leases)
            except BeamjobsError:
                logger.warning("reconciling lost workers failed", exc_info=True)


def _exit_cause(code: int | None) -> str:
    if code is None:
        return "worker lost: its exit was not observed"
    if code < 0:
        return f"worker lost: the worker process was killed by {signal.Signals(-code).name}"
    return f"worker lost: the worker process exited with code {code} before recording an outcome"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(pid, sig)


def _kill_unless_exited(worker: Worker) -> None:
    if not worker.exited.is_set():
        _signal_group(worker.pid, signal.SIGKILL)


def _await_orphan(worker: Worker) -> None:
    """Wait for a worker whose parent died, by polling its pid."""
    while True:
        try:
            os.kill(worker.pid, 0)
        except ProcessLookupError:
            worker.exited.set()
            return
        worker.exited.wait(0.5)
