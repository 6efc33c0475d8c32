"""The key of the caller claims (beamjobs.domain.caller_claims), as the settings name it."""

from __future__ import annotations

import functools

from beamjobs.aws import clients
from beamjobs.aws.errors import aws_errors
from beamjobs.domain.errors import Unavailable
from beamjobs.settings import Settings


@functools.cache
def caller_key(settings: Settings) -> bytes:
    """Read once per process: the Secrets Manager secret's value on AWS, else the key given."""
    if settings.caller_key_secret:
        with aws_errors("the caller key"):
            secret = clients.client("secretsmanager", settings).get_secret_value(
                SecretId=settings.caller_key_secret
            )
        return str(secret["SecretString"]).encode()
    if settings.caller_key:
        return settings.caller_key.encode()
    raise Unavailable(
        "no caller key: BEAMJOBS_CALLER_KEY_SECRET (or, locally, BEAMJOBS_CALLER_KEY) is not set"
    )
