"""The AWS calls of handing a job to a pooled worker (beamjobs.app.warm_offers): answering the
offer's task token, and protecting the pooled task that took it from the pool's scale-in."""

from __future__ import annotations

import json
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from beamjobs.aws.errors import error_code
from beamjobs.domain.errors import FailedPrecondition, Unavailable

logger = logging.getLogger(__name__)

# What SendTaskSuccess answers for a token that no longer waits.
_NOT_WAITING = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
# ECS's longest task scale-in protection (48 hours); a job's time limit is at most a day.
_LONGEST_PROTECTION_MINUTES = 2880


def answer_offer(sfn: Any, task_token: str, output: dict[str, str]) -> None:
    """Answer the task token an execution waits on (an offer) with `output`: FailedPrecondition
    when it waits no longer (answered by another taker, or timed out)."""
    try:
        sfn.send_task_success(taskToken=task_token, output=json.dumps(output))
    except ClientError as error:
        if error_code(error) in _NOT_WAITING:
            raise FailedPrecondition(
                "the offer is gone: taken by another worker, or its job started cold"
            ) from error
        raise Unavailable(f"SendTaskSuccess failed: {error_code(error)}") from error
    except BotoCoreError as error:
        raise Unavailable(f"SendTaskSuccess failed: {error}") from error


def protect_from_scale_in(ecs: Any, cluster: str, task: str) -> None:
    """Keep the pool's scale-in from stopping a task that runs a job (its job's code could not
    be trusted to do this for itself: the permission would reach every task of the cluster).
    Best effort: an unprotected task runs its job as well, unless the pool shrinks meanwhile."""
    try:
        ecs.update_task_protection(
            cluster=cluster,
            tasks=[task],
            protectionEnabled=True,
            expiresInMinutes=_LONGEST_PROTECTION_MINUTES,
        )
    except (ClientError, BotoCoreError):
        logger.warning("could not protect pooled task %s from scale-in", task, exc_info=True)
