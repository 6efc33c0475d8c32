"""Jobs offered to the warm pool's workers (AWS), taken through the worker channel.

The run-job state machine offers a job to the pool by sending the offers queue a message with
its task token (sqs:sendMessage.waitForTaskToken), and waits a few seconds for a taker before it
starts a task of the job's own (RunTask). A pooled worker (an ECS service's task that has
imported Beam and waits on the queue) takes the offer here, and gets the job's worker secret in
return; from then on it is the job's worker like any other.

A pooled worker runs its job's code, with its task's credentials, so what lets it take a job
must not let that code take another. What takes an offer is therefore the task itself, once:
- the call carries a proof of its caller's identity (a signed, unsent STS GetCallerIdentity,
  beamjobs.aws.signed_identity), which must be a session of the pool's own task role. ECS names
  a task role's session after the task, so the session is the task;
- a task takes one offer in its life: a counter of its own, allowed to reach one, is counted
  before the offer is taken (so a task that lost the race for an offer is spent too, and its
  service starts a fresh one);
- the task token goes back to the execution with SendTaskSuccess, which succeeds once per
  offer: an offer taken by another task, or one the state machine stopped waiting for (it has
  started the job's own task), is refused. The state machine then watches the task it names;
  the task is protected from the pool's scale-in while it runs its job.

The pool's role can read the queue, so a job's code could read (and so withdraw) offers meant
for others: those jobs then start cold, as they would without a pool. It cannot take them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from beamjobs.aws.signed_identity import Verifier
from beamjobs.domain.blobs import BlobStore
from beamjobs.domain.errors import InvalidArgument, PermissionDenied
from beamjobs.domain.identity import role_session
from beamjobs.domain.store import JobStore
from beamjobs.domain.worker_secrets import worker_secret

logger = logging.getLogger(__name__)

# A pooled task's counter is kept longer than any task waits for an offer.
_TAKEN_KEEP_SECONDS = 30 * 86_400
# A task token is at most 1024 characters (Step Functions' limit).
_MAX_TOKEN_CHARS = 1024


def taken_counter(task: str) -> str:
    return f"warm-task#{task}"


class WarmOffers:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        answer: Callable[[str, dict[str, str]], None],
        protect: Callable[[str], None],
        verifier: Verifier,
        *,
        pool_role: str,
    ) -> None:
        """`answer`: answers an offer's task token (beamjobs.aws.warm_pool.answer_offer), and
        `protect` keeps a task that took one from the pool's scale-in. `pool_role`: the ARN of
        the pool's task role, the only one whose sessions take."""
        self._store = store
        self._blobs = blobs
        self._answer = answer
        self._protect = protect
        self._verifier = verifier
        self._pool_role = pool_role

    def take(self, job_id: Any, task_token: Any, proof: Any) -> str:
        """The offered job's worker secret, for the pooled task that proves itself with
        `proof` and has taken no offer before."""
        for name, value in (("job_id", job_id), ("task_token", task_token), ("proof", proof)):
            if not isinstance(value, str) or not value:
                raise InvalidArgument(f"{name} is required")
        if len(task_token) > _MAX_TOKEN_CHARS:
            raise InvalidArgument(f"a task token is at most {_MAX_TOKEN_CHARS} characters")
        session = role_session(self._verifier.verify_caller(proof))
        if session is None or session[0] != self._pool_role:
            raise PermissionDenied("only the warm pool's tasks take offered jobs")
        task = session[1]
        if not self._store.count(taken_counter(task), 1, keep_seconds=_TAKEN_KEEP_SECONDS):
            raise PermissionDenied(f"task {task} has taken its job already")
        self._answer(task_token, {"job_id": job_id, "task": task})
        self._protect(task)
        logger.info("task %s took job %s", task, job_id)
        return worker_secret(self._blobs, job_id)


def take_offer_route(offers: WarmOffers) -> Any:
    """TakeOffer as a worker-function route."""

    def take_offer(call: dict[str, Any]) -> dict[str, Any]:
        request = call["request"]
        secret = offers.take(request.get("job_id"), request.get("task_token"), request.get("proof"))
        return {"worker_secret": secret}

    return take_offer
