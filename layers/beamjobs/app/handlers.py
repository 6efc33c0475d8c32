"""What every Lambda handler shares: the event contract and turning domain errors into data.

An event is ``{"rpc": <Job API method>, "request_id": <id minted by the shim per gRPC call>,
"caller": {"principal": <ARN>, "admin": <bool>}, "request": {...}, "caller_signature": <hex>}``.
The caller is whom the shim authenticated the gRPC call for; a handler believes it only under
the shim's signature (beamjobs.domain.caller_claims).
A handler answers ``{"result": {...}}`` or ``{"error": {"code": <gRPC status name>,
"message": ...}}``: domain errors are data, so the invoker never has to guess a status from a
stack trace. Retries of one gRPC call carry the same request_id, which is the
idempotency key of the handlers that create things.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
)

from beamjobs.aws import clients
from beamjobs.domain import caller_claims
from beamjobs.domain.errors import BeamjobsError, InvalidArgument, Unavailable
from beamjobs.domain.identity import Caller
from beamjobs.settings import Settings

# A route takes the validated event as the keyword argument `call` and returns the result
# object (the keyword is what the idempotency decorator hashes).
Route = Callable[..., dict[str, Any]]


def dispatch(
    event: Any, routes: Mapping[str, Route], *, caller_key: Callable[[], bytes] | None
) -> dict[str, Any]:
    """Validate the event's envelope, call the route for its rpc, and wrap the outcome.
    `caller_key`: the key of the shim's signature on the caller the event carries; None for
    events that carry no caller (the worker function's, sent by workers: a worker secret in
    the request says which job they act for)."""
    try:
        call = _validated(event, routes, caller_key)
        return {"result": routes[call["rpc"]](call=call)}
    except BeamjobsError as error:
        return {"error": {"code": error.code, "message": error.message}}
    except IdempotencyAlreadyInProgressError:
        # A retry of a call whose first invocation has not finished, or was stopped at its
        # timeout (its record expires then): the invoker sends it again.
        return {
            "error": {
                "code": Unavailable.code,
                "message": "the same call is still in progress",
                "in_progress": True,
            }
        }


def _validated(
    event: Any, routes: Mapping[str, Route], caller_key: Callable[[], bytes] | None
) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise InvalidArgument("the event must be a JSON object")
    rpc = event.get("rpc")
    if rpc not in routes:
        raise InvalidArgument(f"this function serves {sorted(routes)}, not {rpc!r}")
    request_id = event.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidArgument("request_id is required")
    request = event.get("request", {})
    if not isinstance(request, dict):
        raise InvalidArgument("request must be a JSON object")
    if caller_key is None:
        return {"rpc": rpc, "request_id": request_id, "request": request}
    caller = Caller.from_wire(event.get("caller")).to_wire()
    caller_claims.check(caller_key(), event)
    return {"rpc": rpc, "request_id": request_id, "caller": caller, "request": request}


def idempotency_records(settings: Settings) -> DynamoDBPersistenceLayer:
    """Where the functions' idempotency records live: a table of their own, one item per call
    keyed by its function and hash (spread over partitions), expiring with the table's TTL."""
    return DynamoDBPersistenceLayer(
        table_name=settings.idempotency_table_name,
        boto3_client=clients.client("dynamodb", settings),
    )


def caller_of(call: dict[str, Any]) -> Caller:
    """The caller of a validated call (kept as JSON in it: the idempotency layer hashes it)."""
    return Caller.from_wire(call["caller"])
