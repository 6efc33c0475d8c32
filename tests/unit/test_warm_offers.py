"""Taking a job offered to the warm pool (beamjobs.app.warm_offers): only a session of the pool's
role takes, once per session (its task), and the offer's token is answered with that task."""

from __future__ import annotations

import pytest

from beamjobs.app.warm_offers import WarmOffers
from beamjobs.domain.errors import FailedPrecondition, PermissionDenied
from beamjobs.domain.worker_secrets import keep_worker_secret
from beamjobs.local.memory_blobs import MemoryBlobStore
from beamjobs.local.memory_store import MemoryJobStore

POOL_ROLE = "arn:aws:iam::123456789012:role/pool"
POOL_TASK = "arn:aws:sts::123456789012:assumed-role/pool/0123abcd"
WORKER_TASK = "arn:aws:sts::123456789012:assumed-role/worker/0123abcd"
USER = "arn:aws:iam::123456789012:user/mallory"


class Proofs:
    """A verifier for which a proof is the caller's ARN itself."""

    def verify_caller(self, proof: str) -> str:
        return proof


class Offers:
    """The offers' tokens: each waits for one answer."""

    def __init__(self, *tokens: str) -> None:
        self.waiting = set(tokens)
        self.answers: list[tuple[str, dict[str, str]]] = []
        self.protected: list[str] = []

    def answer(self, token: str, output: dict[str, str]) -> None:
        if token not in self.waiting:
            raise FailedPrecondition("the offer is gone")
        self.waiting.remove(token)
        self.answers.append((token, output))


@pytest.fixture
def blobs():
    blobs = MemoryBlobStore()
    keep_worker_secret(blobs, "job-1", "secret-1")
    keep_worker_secret(blobs, "job-2", "secret-2")
    return blobs


def _taker(blobs, offers):
    return WarmOffers(
        MemoryJobStore(),
        blobs,
        offers.answer,
        offers.protected.append,
        Proofs(),
        pool_role=POOL_ROLE,
    )


def test_a_pooled_task_takes_one_offer_gets_its_jobs_secret_and_is_protected(blobs):
    offers = Offers("token-1", "token-2")
    taker = _taker(blobs, offers)
    assert taker.take("job-1", "token-1", POOL_TASK) == "secret-1"
    assert offers.answers == [("token-1", {"job_id": "job-1", "task": "0123abcd"})]
    assert offers.protected == ["0123abcd"]
    # Its job's code, with the same task's credentials, takes no other.
    with pytest.raises(PermissionDenied, match="taken its job already"):
        taker.take("job-2", "token-2", POOL_TASK)
    assert offers.waiting == {"token-2"}


@pytest.mark.parametrize("caller", [WORKER_TASK, USER])
def test_only_the_pools_role_takes(blobs, caller):
    offers = Offers("token-1")
    with pytest.raises(PermissionDenied, match="warm pool's tasks"):
        _taker(blobs, offers).take("job-1", "token-1", caller)
    assert offers.waiting == {"token-1"} and not offers.protected


def test_a_task_whose_offer_was_gone_is_spent(blobs):
    offers = Offers("token-2")
    taker = _taker(blobs, offers)
    with pytest.raises(FailedPrecondition):
        taker.take("job-1", "token-1", POOL_TASK)  # taken by another, or started cold
    assert not offers.protected
    with pytest.raises(PermissionDenied):
        taker.take("job-2", "token-2", POOL_TASK)
    assert offers.waiting == {"token-2"}
