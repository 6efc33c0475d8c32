"""The caller claim of a handler event, signed by the shim.

The shim authenticates each gRPC call, then invokes a handler with an event naming the caller
(beamjobs.app.handlers). Whoever else may invoke a handler (a role granted lambda:InvokeFunction
by mistake, a compromised component) could name any caller, an admin included. So the shim
signs each event's claim, with its call, under a key only the shim and the handlers hold, and a
handler refuses an event whose signature does not verify: the claim is the shim's or nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from beamjobs.domain.errors import Unauthenticated

# The event's member that carries the signature.
SIGNATURE = "caller_signature"


def _signed_text(event: dict[str, Any]) -> bytes:
    """What is signed: the call and its caller (a signature then fits no other call)."""
    members = [event.get("rpc"), event.get("request_id"), event.get("caller"), event.get("request")]
    return json.dumps(members, sort_keys=True, separators=(",", ":")).encode()


def signed(key: bytes, event: dict[str, Any]) -> dict[str, Any]:
    """The event with its signature."""
    signature = hmac.new(key, _signed_text(event), hashlib.sha256).hexdigest()
    return {**event, SIGNATURE: signature}


def check(key: bytes, event: dict[str, Any]) -> None:
    """Unauthenticated unless the event carries the signature of its call and caller."""
    expected = hmac.new(key, _signed_text(event), hashlib.sha256).hexdigest()
    given = event.get(SIGNATURE)
    if not isinstance(given, str) or not hmac.compare_digest(given, expected):
        raise Unauthenticated("the event's caller is not signed by this deployment's Job API")
