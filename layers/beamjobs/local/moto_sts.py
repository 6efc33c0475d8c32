"""STS in the embedded AWS checks the signature of GetCallerIdentity, as AWS's does.

moto checks signatures only when it enforces IAM for every call, and otherwise answers any
GetCallerIdentity, even for a forged signature or an unknown key (as a default user). The
Job API's authentication rests on STS refusing those, so the embedded AWS's STS refuses them
with moto's own signature check, for the users and role sessions made in it. Every other call
is served as before (without IAM enforcement).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from moto.iam.access_control import IAMRequest
from moto.sts.responses import TokenResponse

_answer_caller_identity = TokenResponse.get_caller_identity


def _checked_caller_identity(self: TokenResponse) -> Any:
    path = self.raw_path
    query = urlparse(self.uri).query
    IAMRequest(
        account_id=self.current_account,
        method=self.method,
        path=f"{path}?{query}" if query else path,
        data=self.data,
        body=self.raw_body,
        headers=self.headers,
        action="GetCallerIdentity",
    ).check_signature()
    return _answer_caller_identity(self)


def install() -> None:
    TokenResponse.get_caller_identity = _checked_caller_identity  # type: ignore[method-assign]
