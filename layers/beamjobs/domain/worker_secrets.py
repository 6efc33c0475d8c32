"""Worker secrets: what a job's worker, and nothing else, reports with (its channel).

A job keeps only its secret's sha256. The secret itself is an object of its own in the bucket,
an environment file as ECS reads one for the worker's task: task overrides and the state
machine's input name the file, never the secret, and only the task execution role (not the
role the job's code runs with) reads it.

A secret dies with its job: the worker channel refuses it once the job has ended
SECRET_AFTER_END_SECONDS ago (time for a last message, and for retries of the call that ended
it), and the file is deleted by the call that ends the job through the channel.
"""

from __future__ import annotations

import hashlib
import secrets

from beamjobs.domain.blobs import BlobStore

# The variable a worker reads its secret from.
WORKER_SECRET_ENV = "BEAMJOBS_WORKER_SECRET"
_SECRETS = "secrets"
SECRET_AFTER_END_SECONDS = 60.0


def mint_worker_secret() -> str:
    return secrets.token_urlsafe(32)


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def worker_secret_key(job_id: str) -> str:
    """Where a job's worker secret is kept: an environment file, as ECS reads one."""
    return f"{_SECRETS}/{job_id}.env"


def keep_worker_secret(blobs: BlobStore, job_id: str, secret: str) -> None:
    blobs.put(worker_secret_key(job_id), f"{WORKER_SECRET_ENV}={secret}\n".encode())


def worker_secret(blobs: BlobStore, job_id: str) -> str:
    """A job's worker secret, for a starter that hands it to the worker itself (locally)."""
    text = blobs.get(worker_secret_key(job_id)).decode()
    return text.strip().removeprefix(f"{WORKER_SECRET_ENV}=")


def forget_worker_secret(blobs: BlobStore, job_id: str) -> None:
    blobs.delete(worker_secret_key(job_id))
