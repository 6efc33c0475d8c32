"""Who calls: principals, the deployment's lists of who may use it and who sees every job, and
the caller a request is served for.

A principal is an AWS identity's ARN as IAM policies name it: a user's ARN, the root's, or a
role's (a role session, whichever its session name, is its role: sessions come and go, the
role is what was granted access).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from beamjobs.domain.errors import InvalidArgument, PermissionDenied

_ASSUMED_ROLE = re.compile(
    r"^arn:(?P<partition>[a-z-]+):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)"
    r"/(?P<session>[^/]+)$"
)
_ARN = re.compile(r"^arn:[a-z-]+:(iam|sts)::(?P<account>\d{12}):\S+$")
_ACCOUNT = re.compile(r"^\d{12}$")
# Every caller of a shim that authenticates no one: the local user of `make run`, who owns
# every job (the shim then listens on localhost only).
LOCAL_PRINCIPAL = "local"


def principal_of(arn: str) -> str:
    """The principal an STS caller ARN stands for: an assumed role's session is its role."""
    session = _ASSUMED_ROLE.match(arn)
    if session is None:
        return arn
    return f"arn:{session['partition']}:iam::{session['account']}:role/{session['role']}"


def role_session(arn: str) -> tuple[str, str] | None:
    """An assumed role's session ARN as (its role's principal, its session name); None for
    any other caller."""
    session = _ASSUMED_ROLE.match(arn)
    if session is None:
        return None
    return principal_of(arn), session["session"]


def account_of(principal: str) -> str | None:
    match = _ARN.match(principal)
    return match["account"] if match else None


def parse_principals(text: str) -> tuple[str, ...]:
    """A comma-separated list of principal ARNs and account ids (a setting's value)."""
    entries = tuple(entry.strip() for entry in text.split(",") if entry.strip())
    for entry in entries:
        if not (_ACCOUNT.match(entry) or _ARN.match(entry)):
            raise ValueError(f"ARNs or 12-digit account ids, not {entry!r}")
    return entries


def account_ids(entries: Iterable[str]) -> list[str]:
    """The entries that are bare account ids (each names every principal of its account)."""
    return [entry for entry in entries if _ACCOUNT.match(entry)]


def _names(entries: Iterable[str], principal: str) -> bool:
    """Whether a list of ARNs and account ids names `principal` (or its account)."""
    account = account_of(principal)
    return any(entry in (principal, account) for entry in entries)


@dataclass(frozen=True)
class Caller:
    """Whom a request is served for. An admin sees and steers every job; anyone else only
    the jobs they prepared."""

    principal: str
    admin: bool = False

    def owns(self, owner: str | None) -> bool:
        return self.admin or (owner is not None and owner == self.principal)

    def to_wire(self) -> dict[str, Any]:
        return {"principal": self.principal, "admin": self.admin}

    @classmethod
    def from_wire(cls, value: Any) -> Caller:
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("principal"), str)
            or not value["principal"]
            or not isinstance(value.get("admin"), bool)
        ):
            raise InvalidArgument("caller must be {principal: string, admin: boolean}")
        return cls(value["principal"], value["admin"])


LOCAL_CALLER = Caller(LOCAL_PRINCIPAL, admin=True)


@dataclass(frozen=True)
class AccessPolicy:
    """Who may use a deployment, and who among them administers it. Each list holds principal
    ARNs and account ids (an account id names every principal of that account)."""

    allowed: tuple[str, ...]
    admins: tuple[str, ...] = ()
    # Never callers, whatever the lists say: the deployment's own worker and mirror task roles,
    # whose sessions run users' code.
    workers: tuple[str, ...] = ()

    def caller(self, principal: str) -> Caller:
        """The caller for a verified principal; PermissionDenied when it may not call."""
        if principal in self.workers:
            raise PermissionDenied(
                f"{principal} is a role of this deployment's workers, which run users' code: "
                "workers are not callers of the Job API"
            )
        admin = _names(self.admins, principal)
        if not admin and not _names(self.allowed, principal):
            raise PermissionDenied(f"{principal} is not allowed to use this Job API")
        return Caller(principal, admin=admin)
