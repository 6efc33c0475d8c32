"""`make bench` (its second part): a soak of the job lifecycle through AWS as it behaves, not as
moto does. 200 jobs go through the real control plane (JobControl, the job aggregate, the
DynamoDB store, the reconciler) on the embedded AWS, with the fault harness on every DynamoDB
and S3 client: 5 % of calls throttled, 1 % applied with their answers lost. Their workers are
the real worker's bookkeeping (claim, heartbeat, message forwarder, outcome) through the real
worker channel (the worker function's handler behind Lambda's Invoke API, reached with the
worker's own clients) around a scripted pipeline, so 200 of them fit in one process; some
start slowly (a Fargate task's 30 s to 10 min), some are killed, some fail, some are
cancelled. For a minute, every invocation of the worker channel is throttled (the function at
its reserved concurrency): no job may be called lost for it.

Time is compressed about 15 times (the lease, the heartbeat, the start lease and the slow
starts together), botocore's retries and the throttled minute are not.

Reports: jobs that ended in the right state (goal 100 %), false "worker lost" (goal 0), and
messages lost or duplicated (goal 0). Beam's LocalJobServicer has no AWS to be faulty, so
this part has no peer.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from beamjobs import runtime
from beamjobs.app.reconcile import fail_lost_jobs
from beamjobs.app.service import JobControl
from beamjobs.aws import clients
from beamjobs.domain.engines import Engines
from beamjobs.domain.executor import Leases
from beamjobs.domain.identity import LOCAL_CALLER
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.limits import Quotas
from beamjobs.domain.model import Job
from beamjobs.domain.staging_tokens import digest, mint
from beamjobs.domain.states import TERMINAL_STATES, JobState
from beamjobs.domain.worker_secrets import worker_secret
from beamjobs.local.embedded import start_embedded
from beamjobs.local.worker_channel import LocalWorkerChannel
from beamjobs.worker.channel import WORKER_FUNCTION, Claimed, JobChannel, channel_invokers
from beamjobs.worker.heartbeat import Heartbeat
from beamjobs.worker.messages import MessageForwarder
from beamjobs_functions.worker.app import handler_for
from tests.faults.harness import Faults

ROOT = Path(__file__).resolve().parents[1]
# Compressed time: a lease of 30 s is 6 s here (botocore's backoffs, up to 20 s, are not
# compressed), a start lease of 15 min is 2 min (it must outlast a slow start and the throttled
# minute, which is not compressed, together: a worker claims its job through the channel),
# and a Fargate start of 10 min is 40 s.
HEARTBEAT_SECONDS = 1.0
LEASE_SECONDS = 6.0
START_LEASE_SECONDS = 120.0
# A worker whose work runs is lost only after 15 min (3 min here) of silence.
LEASES = Leases(LEASE_SECONDS, START_LEASE_SECONDS, running_seconds=180.0)
# Every invocation of the worker channel is throttled for a minute, from this long after the
# first Run.
THROTTLE_AFTER_SECONDS = 10.0
THROTTLE_SECONDS = 60.0
RECONCILE_SECONDS = 2.0
# A slow start: a Fargate task's 30 s to 10 min, compressed.
SLOW_START_SECONDS = (2.0, 40.0)
MESSAGES = 20


class Killed(Exception):
    """The worker's process dies here (nothing after this point happens)."""


@dataclass
class Plan:
    """What a job's client and worker will do, and so the state it must end in."""

    job_id: str
    scenario: str  # succeed, fail, cancel, kill
    start_delay: float
    work_seconds: float
    kill_after: int = 0  # messages logged before a kill
    cancel_after: float = 0.0
    # What happened: the Cancel's answer, the messages the worker logged, whether the work
    # was done (before any stop reached it).
    cancel_answer: JobState | None = None
    logged: list[str] = field(default_factory=list)
    work_done: bool = False


class SoakExecutor:
    """Starts each job's worker on a thread of its own, after its plan's start delay; a stop
    (Cancel) ends the worker as a SIGTERM would, and the watcher settles the job."""

    name = "soak"

    def __init__(
        self, jobs: Jobs, channels: Callable[[str], JobChannel], plans: dict[str, Plan]
    ) -> None:
        """`channels`: the worker channel of a job, as its worker holds it."""
        self._jobs = jobs
        self._channels = channels
        self._plans = plans
        self._stops: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self._working: dict[str, threading.Thread] = {}

    def start(self, job: Job) -> None:
        with self._lock:
            if job.job_id in self._stops:
                return
            self._stops[job.job_id] = threading.Event()
            thread = threading.Thread(target=self._life, args=(job,), daemon=True)
            self.threads.append(thread)
            self._working[job.job_id] = thread
        thread.start()

    def running(self, job_id: str) -> bool:
        """Whether the job's worker thread (its task) still runs."""
        with self._lock:
            thread = self._working.get(job_id)
        return thread is not None and thread.is_alive()

    def stop(self, job_id: str) -> None:
        with self._lock:
            stop = self._stops.get(job_id)
        if stop is not None:
            stop.set()

    def _life(self, job: Job) -> None:
        plan = self._plans[job.job_id]
        stop = self._stops[job.job_id]
        # The task starting: a stop meanwhile means the task never ran.
        if stop.wait(plan.start_delay):
            self._jobs.settle(job.job_id, "the worker's task was stopped before it started")
            return
        try:
            self._work(job, plan, stop)
        except Killed:
            # Half the time the process's end is seen (the local executor's watcher, or Step
            # Functions' Catch); else only the lease tells.
            if random.random() < 0.5:
                self._jobs.settle(job.job_id, "worker lost: the worker process was killed")
            return
        self._jobs.settle(job.job_id, "worker lost: the worker ended without an outcome")

    def _work(self, job: Job, plan: Plan, stop: threading.Event) -> None:
        channel = self._channels(job.job_id)
        if not isinstance(channel.claim(), Claimed):
            return
        forwarder = MessageForwarder(channel, flush_seconds=0.1)
        with Heartbeat(channel, HEARTBEAT_SECONDS, on_stop=stop.set), forwarder:
            for i in range(MESSAGES):
                if stop.wait(plan.work_seconds / MESSAGES):
                    return  # stopped: the process ends, its watcher settles the job
                if plan.scenario == "kill" and i == plan.kill_after:
                    raise Killed
                text = f"{job.job_id} message {i}"
                plan.logged.append(text)
                forwarder.say("JOB_MESSAGE_BASIC", text)
            plan.work_done = True
        if plan.scenario == "fail":
            channel.fail("Traceback: ValueError: the pipeline failed")
        else:
            channel.finish()


def _pipeline() -> bytes:
    from tests.integration.conftest import pipeline_bytes  # what the integration tests prepare

    return pipeline_bytes()


def _plan(job_id: str, rng: random.Random) -> Plan:
    scenario = rng.choices(["succeed", "fail", "cancel", "kill"], [70, 10, 10, 10])[0]
    slow = rng.random() < 0.2
    return Plan(
        job_id=job_id,
        scenario=scenario,
        start_delay=rng.uniform(*SLOW_START_SECONDS) if slow else rng.uniform(0.0, 0.5),
        work_seconds=rng.uniform(1.0, 4.0),
        kill_after=rng.randrange(MESSAGES),
        cancel_after=rng.uniform(0.0, 3.0),
    )


def _verdict(plan: Plan, jobs: Jobs, listed: dict[str, JobState]) -> dict[str, bool]:
    events = jobs.store.events(plan.job_id)
    states = [e.state for e in events if e.state is not None]
    terminal = [s for s in states if s in TERMINAL_STATES]
    causes = [m.text for e in events if e.state in TERMINAL_STATES for m in e.messages]
    worker_lost = any(c.startswith("worker lost") for c in causes)
    final = terminal[-1] if terminal else None
    if plan.scenario == "succeed":
        right = final is JobState.DONE
    elif plan.scenario == "fail":
        right = final is JobState.FAILED and not worker_lost
    elif plan.scenario == "kill":
        right = final is JobState.FAILED and worker_lost
    elif plan.cancel_answer in TERMINAL_STATES:  # the Cancel found the job ended
        right = final is plan.cancel_answer
    else:  # CANCELLED; or DONE if the work was done before the stop reached it
        right = final is JobState.CANCELLED or (final is JobState.DONE and plan.work_done)
    said = [
        m.text for e in events for m in e.messages if m.text.startswith(f"{plan.job_id} message")
    ]
    complete = final in (JobState.DONE, JobState.FAILED) and plan.scenario != "kill"
    return {
        "one terminal state": len(terminal) == 1,
        "same everywhere": final is not None
        and final is jobs.get(plan.job_id).state is listed.get(plan.job_id),
        "right state": right,
        "false worker lost": worker_lost and plan.scenario != "kill",
        "messages lost": complete and said != plan.logged,
        "messages duplicated": len(said) != len(set(said)),
    }


def _explain(plan: Plan, jobs: Jobs) -> None:
    """Say what a job that ended wrongly went through."""
    print(
        f"wrong: {plan.job_id} {plan.scenario} (start delay {plan.start_delay:.1f} s, "
        f"Cancel answered {plan.cancel_answer})"
    )
    for event in jobs.store.events(plan.job_id):
        if event.state is not None:
            causes = "; ".join(m.text[:120] for m in event.messages)
            print(f"  {event.time:.2f} {event.state.value} {causes}")
    print(f"  heartbeats: {jobs.store.heartbeats([plan.job_id])}")


def soak(jobs_count: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    random.seed(seed)
    embedded, settings = start_embedded(ROOT / "template.yaml")
    try:
        stores = runtime.stores(settings)
        attached = [clients.client("dynamodb", settings), clients.client("s3", settings)]
        attached.append(clients.client("dynamodb", settings, budget="patient"))
        faults = Faults(seed=seed).attach(*attached)
        faults.add("*", "throttle", times=10**9, rate=0.05)
        faults.add("*", "lose_response", times=10**9, rate=0.01)
        served = LocalWorkerChannel(handler_for(settings))
        worker = dataclasses.replace(
            settings,
            endpoint_url=served.url,
            worker_function=WORKER_FUNCTION,
            heartbeat_seconds=HEARTBEAT_SECONDS,
        )
        # One process's channel clients serve every worker here, and so one retry quota
        # (botocore's, which a minute's throttle runs dry): harsher than a process per task.
        reports, beats = channel_invokers(worker)
        channel_faults = Faults(seed=seed).attach(reports.client, beats.client)

        def channel(job_id: str) -> JobChannel:
            return JobChannel(reports, job_id, worker_secret(stores.blobs, job_id), beats=beats)

        jobs = Jobs(stores.jobs)
        plans: dict[str, Plan] = {}
        executor = SoakExecutor(jobs, channel, plans)
        control = JobControl(
            jobs,
            stores.blobs,
            Engines.only(executor),
            stores.artifacts,
            # One client runs them all: no quota may refuse what the soak is to exercise.
            Quotas(concurrent_jobs=jobs_count, prepares_per_minute=10 * jobs_count),
        )
        done = threading.Event()

        def reconcile() -> None:
            while not done.wait(RECONCILE_SECONDS):
                try:
                    fail_lost_jobs(stores.jobs, executor, LEASES)
                except Exception:  # a pass that failed is followed by the next one
                    logging.getLogger(__name__).warning("reconcile failed", exc_info=True)

        threading.Thread(target=reconcile, daemon=True).start()

        def client(index: int) -> None:
            pipeline_ref = stores.blobs.put_content("pipelines", _pipeline())
            job_id = control.prepare(
                LOCAL_CALLER,
                pipeline_ref=pipeline_ref,
                options={},
                job_name=f"soak{index}",
                staging_token_sha256=digest(mint()),
            )
            plans[job_id] = plan = _plan(job_id, rng)
            control.run(LOCAL_CALLER, job_id)
            if plan.scenario == "cancel":
                time.sleep(plan.cancel_after)
                plan.cancel_answer = control.cancel(LOCAL_CALLER, job_id)

        started = time.monotonic()
        # The worker channel throttled for a minute, once the first jobs run.
        threading.Timer(
            THROTTLE_AFTER_SECONDS,
            channel_faults.window,
            ("Invoke", "throttle"),
            {"seconds": THROTTLE_SECONDS},
        ).start()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(client, range(jobs_count)))
        # Every job ends: its worker's outcome, its watcher's settle, or the reconciler.
        deadline = time.monotonic() + SLOW_START_SECONDS[1] + START_LEASE_SECONDS + 120
        while any(t.is_alive() for t in executor.threads) or stores.jobs.active_jobs():
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        elapsed = time.monotonic() - started
        done.set()
        faults.detach(*attached)
        channel_faults.detach(reports.client, beats.client)
        served.stop()
        listed = {job.job_id: job.state for job in stores.jobs.recent_jobs(jobs_count)}
        verdicts = [_verdict(plan, jobs, listed) for plan in plans.values()]
        for plan, verdict in zip(plans.values(), verdicts, strict=True):
            if not verdict["right state"] or verdict["false worker lost"]:
                _explain(plan, jobs)
        totals = Counter(key for verdict in verdicts for key, value in verdict.items() if value)
        fired = Counter(action for _, action in faults.fired)
        return {
            "jobs": len(plans),
            "seconds": round(elapsed),
            "scenarios": dict(Counter(p.scenario for p in plans.values())),
            "slow starts": sum(p.start_delay > 1 for p in plans.values()),
            "throttled calls": fired["throttle"],
            "lost responses": fired["lose_response"],
            "channel throttled": len(channel_faults.fired),
            **{key: totals[key] for key in verdicts[0]},
        }
    finally:
        embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the local channel's requests
    report = soak(args.jobs, args.seed)
    jobs = report["jobs"]
    print(f"\nsoak: {jobs} jobs in {report['seconds']} s through faulty AWS")
    print(f"  scenarios {report['scenarios']}, {report['slow starts']} slow starts")
    print(f"  {report['throttled calls']} calls throttled, {report['lost responses']} answers lost")
    print(
        f"  worker channel throttled for {THROTTLE_SECONDS:g} s: "
        f"{report['channel throttled']} invocations refused"
    )
    print(
        f"  right state: {report['right state']}/{jobs} "
        f"({100 * report['right state'] / jobs:.1f} %, goal 100 %)"
    )
    print(f"  one terminal state, the same everywhere: {report['same everywhere']}/{jobs}")
    print(f"  false 'worker lost': {report['false worker lost']} (goal 0)")
    print(
        f"  jobs with messages lost: {report['messages lost']}, "
        f"duplicated: {report['messages duplicated']} (goal 0)"
    )


if __name__ == "__main__":
    main()
