"""The job aggregate: the one place that decides what happens to a job.

Its verbs are those of Beam Prism's job handle: `start`, `running`, `finish`, `fail`, `cancel`,
`drain`, `settle`, `say`, `stage`, `beat`. Each is a rule, a pure decision over the job as last
read, that answers the change to append, nothing (the job is already where the verb would take
it, or a final state stands), or a domain error. `Jobs` applies a rule: read, decide, append
after the tail; when another writer appended first, read again and decide again. That loop is
the only retry of a decision anywhere (botocore retries the calls themselves, and the store
recognises its own write whose answer was lost).

A job run counts against its owner's concurrent jobs from Run to its end: it takes one of the
owner's slots before it starts (refused when all are held) and gives it back when it ends,
whoever ends it. A slot whose give-back was lost (a writer killed just after the job's end),
or taken by a Run that died before starting its job, is found and freed when a Run would
otherwise be refused.

A job belongs to whoever prepared it. A verb done for a caller (an RPC's) finds only the jobs
that caller owns: any other is NOT_FOUND, exactly as a job that does not exist, so that no one
learns of another's jobs. The service's own verbs (a worker's, the reconciler's) have no caller.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from beamjobs.domain.errors import (
    BeamjobsError,
    Conflict,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
)
from beamjobs.domain.identity import Caller
from beamjobs.domain.limits import REPORTS_PER_MINUTE, Quotas, exceeded
from beamjobs.domain.model import (
    Change,
    Job,
    Message,
    Staged,
    StagingLease,
    Upstream,
    identified_batches,
    is_after,
    message_batches,
    unknown_job,
)
from beamjobs.domain.states import JobState, can_transition, is_terminal
from beamjobs.domain.store import JobStore

# A preparation must be run within this long. With it, every item of a job can expire a fixed
# time after it is written and still outlive the job (see item_lifetime).
PREPARATION_WINDOW_SECONDS = 7 * 86_400
# A staging session holds its preparation's token this long at a time, and extends it while
# it lasts; a session that died without ending lets go of it after this long.
STAGING_LEASE_SECONDS = 300.0
# Appends lose races only to other writers of the same job; re-reading settles it quickly.
_MAX_RACE_RETRIES = 50
# A slot whose job has not started this long after taking it was left by a Run that died in
# between (a Run takes and starts within a handler's 30 s): it is free again.
SLOT_GRACE_SECONDS = 120.0

Rule = Callable[[Job, float], Change | None]


def item_lifetime(*, retention_seconds: float, max_job_seconds: float) -> float:
    """How long after it is written an item of a job may expire. An item is written at or
    after Prepare; the job starts within PREPARATION_WINDOW_SECONDS of Prepare and runs for at
    most max_job_seconds: so every item outlives its job's end by retention_seconds at least,
    and an active job never loses its history (as TTL counted from Prepare would)."""
    return retention_seconds + max_job_seconds + PREPARATION_WINDOW_SECONDS


class TransitionRejected(FailedPrecondition):
    """The job's current state does not allow the requested transition."""

    def __init__(self, job: Job, to: JobState) -> None:
        verb = "is final" if is_terminal(job.state) else f"cannot move to {to.value}"
        super().__init__(f"job {job.job_id} is {job.state.value}: the state {verb}")


def _principal_key(principal: str | None) -> str:
    """A principal as counters and slots name it (a fixed-size key of no particular syntax)."""
    return hashlib.sha256((principal or "").encode()).hexdigest()


def slot_holder(owner: str | None) -> str:
    """Whose slots a job of `owner` takes (the store's name for them)."""
    return _principal_key(owner)


# -- the rules: pure decisions -------------------------------------------------------------------


def owned(job: Job, caller: Caller | None) -> Job:
    """The job, if `caller` may see it (None: the service itself); else NOT_FOUND."""
    if caller is not None and not caller.owns(job.owner):
        raise unknown_job(job.job_id)
    return job


def _move(job: Job, to: JobState, messages: Sequence[Message] = ()) -> Change | None:
    """To `to`, unless a final state stands (then nothing). Other moves the state machine
    forbids are refused."""
    if is_terminal(job.state):
        return None
    if not can_transition(job.state, to):
        raise TransitionRejected(job, to)
    return Change(state=to, messages=tuple(messages))


def start_rule(job: Job, now: float) -> Change | None:
    """Run: STARTING, once. A Run retried (with any request id) after the job started answers
    the job as it is; a preparation that was cancelled, is not fully staged, or is too old is
    refused."""
    if job.started_at is not None:
        return None
    if job.state is not JobState.STOPPED:
        raise FailedPrecondition(
            f"preparation {job.job_id} is {job.state.value} and never ran; "
            "prepare the pipeline again to run it"
        )
    if job.unstaged:
        raise FailedPrecondition(
            f"preparation {job.job_id} cannot run: these artifacts were never staged: "
            f"{', '.join(job.unstaged)} (the artifact staging session did not complete); "
            "prepare the pipeline again and let the SDK stage its artifacts"
        )
    if now - job.created_at > PREPARATION_WINDOW_SECONDS:
        raise FailedPrecondition(
            f"preparation {job.job_id} expired: a preparation is run within "
            f"{PREPARATION_WINDOW_SECONDS // 86_400} days; prepare the pipeline again"
        )
    return Change(state=JobState.STARTING)


def running_rule(claim: str | None) -> Rule:
    """The worker began (its `claim`: the report that claims the job): RUNNING, only from
    STARTING (a job cancelled or failed meanwhile, or claimed by another worker, is not run)."""
    return lambda job, now: (
        Change(state=JobState.RUNNING, report=claim) if job.state is JobState.STARTING else None
    )


def reported(job: Job, report: str | None) -> bool:
    """Whether `report` (or, for a batch of messages, a later batch of the same call) appended
    an event already. A worker's reports that append are made one after another, so the last
    one is all it takes."""
    if report is None or job.last_report is None:
        return False
    if job.last_report == report:
        return True
    call, _, batch = report.rpartition("/")
    last_call, _, last_batch = job.last_report.rpartition("/")
    same_call = bool(call) and call == last_call and batch.isdigit() and last_batch.isdigit()
    return same_call and int(last_batch) >= int(batch)


def finish_rule(job: Job, now: float) -> Change | None:
    """The pipeline succeeded: DONE, unless a final state (a cancel that won) stands."""
    return _move(job, JobState.DONE)


def fail_rule(cause: str) -> Rule:
    """The job failed: FAILED, its cause in the same event, unless a final state stands."""

    def rule(job: Job, now: float) -> Change | None:
        return _move(job, JobState.FAILED, message_batches([_error(cause, now)])[0])

    return rule


def settle_rule(cause: str) -> Rule:
    """The job's work has stopped, and its worker may not have said how: CANCELLED after
    CANCELLING, DRAINED after DRAINING, FAILED with `cause` otherwise. A final state stands,
    and a job never run (STOPPED) has no work to have ended (a stale or replayed report)."""

    def rule(job: Job, now: float) -> Change | None:
        if job.state is JobState.STOPPED:
            return None
        if job.state is JobState.CANCELLING:
            return _move(job, JobState.CANCELLED)
        if job.state is JobState.DRAINING:
            return _move(job, JobState.DRAINED)
        return fail_rule(cause)(job, now)

    return rule


def cancel_rule(job: Job, now: float) -> Change | None:
    """Cancel: a job never run is CANCELLED at once; a starting, running or draining one is
    CANCELLING (its work is then stopped); CANCELLING or final, it stays."""
    if is_terminal(job.state) or job.state is JobState.CANCELLING:
        return None
    to = JobState.CANCELLED if job.state is JobState.STOPPED else JobState.CANCELLING
    return _move(job, to)


def drain_rule(job: Job, now: float) -> Change | None:
    """Drain: a streaming job that is RUNNING becomes DRAINING. Batch pipelines finish on
    their own, so draining one is refused (as Dataflow does) in favour of Cancel."""
    if job.bounded:
        raise FailedPrecondition(
            f"job {job.job_id} is a batch (bounded) pipeline: drain applies to streaming "
            "pipelines only; use Cancel to stop it"
        )
    if job.state is JobState.DRAINING:
        return None
    if job.state is not JobState.RUNNING:
        raise FailedPrecondition(
            f"job {job.job_id} is {job.state.value}: only a RUNNING job can be drained"
        )
    return Change(state=JobState.DRAINING)


def _not_run(job: Job) -> None:
    if job.started_at is not None or job.state is not JobState.STOPPED:
        raise FailedPrecondition(
            f"job {job.job_id} is {job.state.value}: its artifacts are staged before Run, "
            "and can no longer change"
        )


def lease_rule(token_sha256: str, session: str, until: float) -> Rule:
    """A staging session takes (or, holding it, extends) the exclusive lease on the
    preparation's staging token. The token must be the one the preparer was given (else the
    job is NOT_FOUND, as to anyone without it); a token whose session completed is spent; one
    that another session holds is ABORTED until that lease lapses."""

    def rule(job: Job, now: float) -> Change | None:
        expected = job.staging_token_sha256 or ""
        if not (expected and hmac.compare_digest(expected, token_sha256)):
            raise unknown_job(job.job_id)
        _not_run(job)
        if job.staging_spent:
            raise FailedPrecondition(
                f"the staging token of job {job.job_id} was used: a session staged its artifacts"
            )
        held = job.staging_lease
        if held is not None and held.session != session and held.until > now:
            raise Conflict(
                f"another staging session holds the staging token of job {job.job_id} "
                f"(for {held.until - now:.0f} s more unless it ends first)"
            )
        return Change(lease=StagingLease(session, until))

    return rule


def stage_rule(staged: Staged, session: str) -> Rule:
    """A staging session's outcome is recorded, by the session that holds the lease, on a
    preparation that has not run: once a job started, its artifacts can no longer change."""

    def rule(job: Job, now: float) -> Change | None:
        _not_run(job)
        if job.staging_lease is None or job.staging_lease.session != session:
            raise Conflict(
                f"this staging session no longer holds the staging token of job {job.job_id}"
            )
        return Change(staged=staged)

    return rule


def say_rule(messages: tuple[Message, ...], report: str | None = None) -> Rule:
    """Messages are appended whatever the state, once per `report` (a retried call's)."""
    return lambda job, now: (
        None if reported(job, report) else Change(messages=messages, report=report)
    )


def attach_rule(upstream_job_id: str, replacing: str | None) -> Rule:
    """The job's mirror prepared its upstream job: the job now runs there. A mirror that
    resumes and finds its upstream preparation never ran replaces it (`replacing`, the one it
    found); any other attachment stands (Conflict), so a job runs upstream once."""

    def rule(job: Job, now: float) -> Change | None:
        if is_terminal(job.state) or job.state is JobState.STOPPED:
            raise FailedPrecondition(f"job {job.job_id} is {job.state.value}: it runs nowhere")
        attached = job.upstream.job_id if job.upstream else None
        if attached == upstream_job_id:
            return None
        if attached != replacing:
            raise Conflict(f"job {job.job_id} runs upstream as {attached}")
        return Change(upstream=Upstream(upstream_job_id))

    return rule


def mirror_rule(messages: tuple[tuple[str, Message], ...]) -> Rule:
    """Upstream messages (id, message) are appended after the ones mirrored before, and the
    cursor moves past them in the same event; messages at or before the cursor are replays (a
    mirror that resumed, a retried call) and are dropped. The mirror's own messages (id "")
    are appended and move nothing."""

    def rule(job: Job, now: float) -> Change | None:
        if job.upstream is None:
            raise FailedPrecondition(f"job {job.job_id} runs on no upstream engine")
        cursor = job.upstream.cursor
        fresh = []
        for message_id, message in messages:
            if not message_id:
                fresh.append(message)
            elif is_after(message_id, cursor):
                fresh.append(message)
                cursor = message_id
        if not fresh:
            return None
        return Change(messages=tuple(fresh), upstream=replace(job.upstream, cursor=cursor))

    return rule


def _error(cause: str, now: float) -> Message:
    return Message("JOB_MESSAGE_ERROR", cause, now)


# -- applying them -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decided:
    """A rule applied: the job after it, and whether this call appended its change."""

    job: Job
    changed: bool


class JobHandle:
    """The verbs a job's work reports through, bound to that job (as a worker's channel is)."""

    def __init__(self, jobs: Jobs, job_id: str) -> None:
        self._jobs = jobs
        self.job_id = job_id

    def now(self) -> float:
        return self._jobs.now()

    def beat(self) -> JobState:
        return self._jobs.beat(self.job_id)

    def say(self, messages: Sequence[Message]) -> None:
        self._jobs.say(self.job_id, messages)


class Jobs:
    """The verbs over one store."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def now(self) -> float:
        return self.store.now()

    def handle(self, job_id: str) -> JobHandle:
        """The verbs of one job's work, bound to it."""
        return JobHandle(self, job_id)

    def prepare(self, job: Job) -> None:
        self.store.create(job)

    def get(self, job_id: str, caller: Caller | None = None) -> Job:
        return owned(self.store.get(job_id), caller)

    def recent(self, limit: int, caller: Caller) -> list[Job]:
        """The caller's `limit` newest jobs (every job's, for an admin), newest first."""
        return self.store.recent_jobs(limit, owner=None if caller.admin else caller.principal)

    def admit_prepare(self, caller: Caller, quotas: Quotas) -> None:
        """Count a Prepare against the caller's Prepares of this minute (ResourceExhausted
        past the quota). Counted before anything is stored, so a refused one stores nothing."""
        principal = _principal_key(caller.principal)
        minute = int(self.now() // 60)
        limit = quotas.prepares_per_minute
        if not self.store.count(f"prepares#{principal}#{minute}", limit, keep_seconds=3600):
            raise exceeded("Prepares per minute", str(limit), "this minute's are made")

    def admit_report(self, job_id: str, kind: str) -> None:
        """Count one of the job's worker's reports of `kind` (a key of REPORTS_PER_MINUTE)
        against this minute's (ResourceExhausted past them)."""
        limit = REPORTS_PER_MINUTE[kind]
        minute = int(self.now() // 60)
        if not self.store.count(f"reports#{job_id}#{kind}#{minute}", limit, keep_seconds=3600):
            raise ResourceExhausted(
                f"job {job_id} reported {limit} times this minute ({kind}): a job's worker "
                f"may report {kind} {limit} times a minute"
            )

    def start(
        self, job_id: str, caller: Caller | None = None, *, concurrent_jobs: int | None = None
    ) -> Job:
        """STARTING, or the job as it is if it started already (the caller starts its work
        while it is STARTING: starting is idempotent, a retried Run's start included). With
        `concurrent_jobs`, a job not yet started first takes one of its owner's that many
        slots (ResourceExhausted when its owner's active jobs hold them all)."""
        job = self.get(job_id, caller)
        if concurrent_jobs is None or job.started_at is not None:
            return self.apply(job_id, start_rule, known=job, caller=caller).job
        self._take_slot(job, concurrent_jobs)
        try:
            started = self.apply(job_id, start_rule, known=job, caller=caller).job
        except BeamjobsError:  # refused (or cancelled meanwhile): it will not run
            self._give_back_slot(job)
            raise
        if is_terminal(started.state):  # a rival Run started it, and it has ended already
            self._give_back_slot(started)
        return started

    def running(
        self, job_id: str, *, known: Job | None = None, claim: str | None = None
    ) -> Job | None:
        """The job, RUNNING, when this call (`claim`, sent again or not) claimed it; None when
        it must not run."""
        decided = self.apply(job_id, running_rule(claim), known=known)
        again = decided.job.state is JobState.RUNNING and reported(decided.job, claim)
        return decided.job if decided.changed or again else None

    def finish(self, job_id: str, *, known: Job | None = None) -> Job:
        return self.apply(job_id, finish_rule, known=known).job

    def fail(self, job_id: str, cause: str, *, known: Job | None = None) -> Job:
        return self.apply(job_id, fail_rule(cause), known=known).job

    def settle(self, job_id: str, cause: str) -> Job:
        return self.apply(job_id, settle_rule(cause)).job

    def settle_as_read(self, job: Job, cause: str) -> Job | None:
        """Settle `job` only as it was read: the job after it, or None when it moved on
        meanwhile (a worker that reported late, a cancel), or was final already."""
        settle = settle_rule(cause)

        def unchanged(current: Job, now: float) -> Change | None:
            return settle(current, now) if current.seq == job.seq else None

        decided = self.apply(job.job_id, unchanged, known=job)
        return decided.job if decided.changed else None

    def cancel(self, job_id: str, caller: Caller | None = None) -> Job:
        """The job after Cancel; CANCELLING means its work is to be stopped (again, for a
        retried Cancel: the first may have died before stopping it)."""
        return self.apply(job_id, cancel_rule, caller=caller).job

    def drain(self, job_id: str, caller: Caller | None = None) -> Job:
        return self.apply(job_id, drain_rule, caller=caller).job

    def lease_staging(
        self, job_id: str, token_sha256: str, session: str, caller: Caller | None = None
    ) -> Job:
        """The job, once `session` holds its staging token for STAGING_LEASE_SECONDS."""
        until = self.store.now() + STAGING_LEASE_SECONDS
        return self.apply(job_id, lease_rule(token_sha256, session, until), caller=caller).job

    def stage(
        self,
        job_id: str,
        session: str,
        pipeline_ref: str,
        unstaged: Sequence[str],
        caller: Caller | None = None,
        artifacts: Sequence[str] = (),
        artifact_bytes: int = 0,
    ) -> Job:
        """Record the outcome of the staging session that holds the token, which lets go of
        it (and, complete, spends it): the pipeline, what is unstaged, what is (`artifacts`),
        and the job's artifact bytes received so far."""
        staged = Staged(pipeline_ref, tuple(unstaged), tuple(artifacts), artifact_bytes)
        return self.apply(job_id, stage_rule(staged, session), caller=caller).job

    def say(
        self,
        job_id: str,
        messages: Sequence[Message],
        *,
        known: Job | None = None,
        report: str | None = None,
    ) -> Job | None:
        """Append messages in order, in as few events as the bounds allow (`known`: the job as
        the caller just read it); the job after them (`known` when there were none). A failure
        leaves the batches before it stored; the caller retries the rest (see message_batches).
        The batches of a worker's `report` are each appended once, however often it is sent."""
        for index, batch in enumerate(message_batches(messages)):
            rule = say_rule(batch, None if report is None else f"{report}/{index}")
            known = self.apply(job_id, rule, known=known).job
        return known

    def attach(self, job_id: str, upstream_job_id: str, *, replacing: str | None = None) -> Job:
        return self.apply(job_id, attach_rule(upstream_job_id, replacing)).job

    def mirror(self, job_id: str, messages: Sequence[tuple[str, Message]]) -> Job:
        """Append upstream messages (id, message) not mirrored before, in as few events as the
        bounds allow; the job after them (its upstream cursor says how far it got)."""
        job = None
        for batch in identified_batches(messages):
            job = self.apply(job_id, mirror_rule(batch)).job
        return job if job is not None else self.get(job_id)

    def end_as_upstream(self, job_id: str, state: JobState, cause: str) -> Job:
        """The job's upstream job ended in `state`: the job ends as it did (a final state
        written meanwhile stands). A cancel or drain made on the upstream engine itself shows
        as CANCELLING or DRAINING first, as through Beamjobs."""
        if state is JobState.DONE:
            return self.finish(job_id)
        if state is JobState.FAILED:
            return self.fail(job_id, cause)
        if state is JobState.CANCELLED:
            self.cancel(job_id)
        elif state is JobState.DRAINED and self.get(job_id).state is JobState.RUNNING:
            with contextlib.suppress(FailedPrecondition):  # a batch job: FAILED, with the cause
                self.drain(job_id)
        return self.settle(job_id, cause)

    def _take_slot(self, job: Job, limit: int) -> None:
        holder = slot_holder(job.owner)
        holders = self.store.take_slot(holder, job.job_id, limit)
        if holders is None:
            return
        freed = {held: at for held, at in holders.items() if self._left_behind(held, at)}
        for held, taken_at in freed.items():
            self.store.give_back_slot(holder, held, taken_at=taken_at)
        if not freed or self.store.take_slot(holder, job.job_id, limit) is not None:
            raise exceeded("concurrent jobs", str(limit), f"{len(holders)} active")

    def _left_behind(self, job_id: str, taken_at: float) -> bool:
        """Whether the job holding a slot no longer needs it: it ended (its give-back was
        lost), or never started (its Run died after taking the slot)."""
        try:
            job = self.store.get(job_id)
        except NotFound:
            return True
        if is_terminal(job.state):
            return True
        return job.started_at is None and self.now() - taken_at > SLOT_GRACE_SECONDS

    def _give_back_slot(self, job: Job) -> None:
        self.store.give_back_slot(slot_holder(job.owner), job.job_id)

    def beat(self, job_id: str, *, known: Job | None = None) -> JobState:
        """The worker is alive; answers the job's state, so a worker learns of a cancel
        (`known`: the job as the caller just read it, whose state is answered unread)."""
        self.store.beat(job_id)
        return (known or self.store.get(job_id)).state

    def apply(
        self,
        job_id: str,
        rule: Rule,
        *,
        known: Job | None = None,
        caller: Caller | None = None,
    ) -> Decided:
        """Decide with `rule` on the job (`known`: as the caller last saw it, to skip a read)
        and append its change; on a rival's append, read and decide again. For a `caller`,
        only a job it owns (its owner never changes, so one check holds for every read)."""
        job = owned(known if known is not None else self.store.get(job_id), caller)
        for _ in range(_MAX_RACE_RETRIES):
            change = rule(job, self.store.now())
            if change is None:
                self.store.repair(job)  # (a retried call's first attempt may have lost it)
                return Decided(job, changed=False)
            try:
                after = self.store.append(job, change)
            except Conflict:
                job = self.store.get(job_id)
                continue
            if is_terminal(after.state) and after.started_at is not None:
                self._give_back_slot(after)  # it ran: it held one of its owner's slots
            return Decided(after, changed=True)
        raise Conflict(f"job {job_id}: too many concurrent writers")
