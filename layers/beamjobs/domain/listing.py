"""ListJobs and ListMessages for people: the filters a caller may use, and page tokens.

A page token is opaque to clients: where the listing goes on, and a digest of the filters it
was made for (a token is refused with other filters, which would skip or repeat jobs)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from beamjobs.domain.errors import InvalidArgument, PermissionDenied
from beamjobs.domain.identity import Caller
from beamjobs.domain.limits import (
    ID_MAX_CHARS,
    JOB_NAME_MAX_BYTES,
    LIST_PAGE_DEFAULT,
    LIST_PAGE_MAX,
    PAGE_TOKEN_MAX_BYTES,
)
from beamjobs.domain.model import utf8_size
from beamjobs.domain.states import JobState
from beamjobs.domain.store import JobQuery

# Creation times are listed as fixed-width decimals (beamjobs.domain.store.listing_key): a bound
# must be one of them to compare as a number.
_LATEST_TIME = 1e10
_LISTING_KEY = re.compile(rf"\d{{10}}\.\d{{6}}#[A-Za-z0-9][A-Za-z0-9._-]{{0,{ID_MAX_CHARS - 1}}}")


def job_query(
    caller: Caller,
    *,
    states: Iterable[str] = (),
    name_prefix: str = "",
    created_after: float | None = None,
    created_before: float | None = None,
    owner: str = "",
) -> JobQuery:
    """What a caller's ListJobs lists: their own jobs, or (admins only) anyone's."""
    if not isinstance(states, list | tuple | set | frozenset) or not all(
        isinstance(state, str) for state in states
    ):
        raise InvalidArgument("states is a list of job state names")
    for text in (name_prefix, owner):
        if not isinstance(text, str):
            raise InvalidArgument("name_prefix and owner are strings")
    if owner and owner != caller.principal and not caller.admin:
        raise PermissionDenied("only an admin lists the jobs of another owner")
    try:
        wanted = frozenset(JobState(state) for state in states)
    except ValueError as error:
        raise InvalidArgument(f"states: {error}") from None
    if utf8_size(name_prefix) > JOB_NAME_MAX_BYTES:
        raise InvalidArgument(f"name_prefix is a string of at most {JOB_NAME_MAX_BYTES} bytes")
    for name, bound in (("created_after", created_after), ("created_before", created_before)):
        if bound is not None and (
            isinstance(bound, bool)
            or not isinstance(bound, int | float)
            or not 0 <= bound < _LATEST_TIME
        ):
            raise InvalidArgument(f"{name} must be a time between 1970 and 2286")
    return JobQuery(
        states=wanted,
        name_prefix=name_prefix,
        created_after=created_after,
        created_before=created_before,
        owner=owner or (None if caller.admin else caller.principal),
    )


def page_size(asked: int) -> int:
    """The page size asked for (0: the default), within 1 to LIST_PAGE_MAX."""
    if isinstance(asked, bool) or not isinstance(asked, int) or not 0 <= asked <= LIST_PAGE_MAX:
        raise InvalidArgument(f"page_size must be between 1 and {LIST_PAGE_MAX} (0: the default)")
    return asked or LIST_PAGE_DEFAULT


def page_token(query: JobQuery, after: str | None) -> str:
    """The token of the page after `after` of `query`'s listing ("" at its end)."""
    if after is None:
        return ""
    text = json.dumps({"after": after, "query": _digest(query)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode()


def resume_after(query: JobQuery, token: str) -> str | None:
    """Where a page token says `query`'s listing goes on (None for the first page)."""
    if not token:
        return None
    try:
        if len(token) > PAGE_TOKEN_MAX_BYTES:
            raise ValueError("too long")
        values: Any = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        after, digest = values["after"], values["query"]
        if not isinstance(after, str) or not _LISTING_KEY.fullmatch(after):
            raise ValueError("no place in a listing")
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeError):
        raise InvalidArgument("page_token is not one this service gave") from None
    if digest != _digest(query):
        raise InvalidArgument("page_token was given for other filters: list again from the start")
    return after


def _digest(query: JobQuery) -> str:
    fields = [
        sorted(state.value for state in query.states),
        query.name_prefix,
        query.created_after,
        query.created_before,
        query.owner,
    ]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:32]
