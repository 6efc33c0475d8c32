"""moto tuned for the embedded AWS: faster, and bounded in memory, without changing what it
answers.

Profiling the embedded AWS showed most of a DynamoDB request's time spent outside DynamoDB's
logic: moto lists its own package directory on every request to route it, inspects the handler
class's methods on every request, and serializes each response by walking the service model
(a Query returning two job items cost ~12 ms in the serializer alone). The first two are pure
functions of the installed code and are memoized. For the item and stream operations Beamjobs
calls on its hot paths, the handler's result is already in DynamoDB's wire format, so it is
written as JSON directly: only the members the operation's output declares, timestamps as epoch
seconds, exactly as the generic serializer renders them (checked by comparing both on every
response of the test suite).

And a Query of a table's partition (not of an index) gathers and sorts every item of the table
before keeping the partition's: it grew from ~1.5 ms to ~13 ms within a few dozen jobs, without
bound. Such a Query is given its partition's items alone, which moto then sorts and filters as
before.

And moto keeps every DynamoDB Streams shard iterator it ever issued (~1.7 KB each; a change feed
polling twice a second would hold ~300 MB a day). Only the newest are kept, as many as the feed
uses in more than the 15 minutes after which DynamoDB Streams' own iterators expire.

And moto answers a GetRecords with every record asked for, where DynamoDB Streams stops at 1 MB:
a burst of large messages reached the change feed as one 20 MB answer, which the shim's heap
then kept the size of. The answer stops at 1 MB, as AWS's does (always at least one record).

And an UpdateItem parsed its UpdateExpression twice and deep-copied the tree before validating
it: the job record's projection (a SET of each of its attributes) cost ~0.6 ms to parse and
~0.9 ms to copy. A parsed tree is kept by its expression's text (the validator still works on a
copy of it, never on the tree itself), and a tree is copied through pickle, 5x faster than
deepcopy, which gives the same independent copy of these plain nodes.

And each DynamoDB and DynamoDB Streams request crossed Flask (its request context, its routing,
its CORS headers) on its way to moto's handler, about a fifth of the embedded AWS's CPU. These
JSON-protocol requests name their handler in their X-Amz-Target header, and go to it directly
(DirectJsonTargets); their answers are moto's, byte for byte.
"""

from __future__ import annotations

import copy
import datetime
import functools
import inspect
import json
import pickle
from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import ClientError
from flask import Response
from moto import backends
from moto.core import responses
from moto.core.serialize import TimestampSerializer
from moto.dynamodb.models.table import Table
from moto.dynamodb.parsing import validators
from moto.dynamodb.parsing.ast_nodes import Node  # type: ignore[attr-defined]
from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.models import DynamoDBStreamsBackend
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.moto_server.werkzeug_app import BackendRequest
from werkzeug.exceptions import HTTPException

# Operations whose results are plain wire-format dicts (see the module's docstring).
_PLAIN_JSON_OPERATIONS = frozenset(
    {
        ("dynamodb", "GetItem"),
        ("dynamodb", "PutItem"),
        ("dynamodb", "UpdateItem"),
        ("dynamodb", "DeleteItem"),
        ("dynamodb", "Query"),
        ("dynamodbstreams", "GetRecords"),
        ("dynamodbstreams", "GetShardIterator"),
    }
)
# Both services speak the JSON 1.0 protocol.
_CONTENT_TYPE = "application/x-amz-json-1.0"

# moto's own serializer and Query, kept when install() replaces them.
generic_serialized = responses.BaseResponse.serialized
generic_query = Table.query
generic_get_records = DynamoDBStreamsBackend.get_records
# At most five GetRecords a second for 15 minutes, with room to spare.
MAX_SHARD_ITERATORS = 10_000
# DynamoDB Streams' GetRecords returns "up to 1 MB" of records.
GET_RECORDS_MAX_BYTES = 1024 * 1024
_QUERY_PARAMETERS = inspect.signature(generic_query)
generic_parse_update = UpdateExpressionParser.make
# Distinct UpdateExpressions kept parsed: Beamjobs writes a few dozen shapes.
_PARSED_UPDATES = 256
# The handler a JSON-protocol request's X-Amz-Target prefix names.
_JSON_TARGET_HANDLERS: dict[str, Callable[..., Any]] = {
    "DynamoDB_20120810": DynamoHandler.dispatch,
    "DynamoDBStreams_20120810": DynamoDBStreamsHandler.dispatch,
}


def install() -> None:
    """Apply the speed-ups to moto in this process (idempotent)."""
    if responses.BaseResponse.serialized is not generic_serialized:
        return
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    responses.method_names_from_class = functools.cache(responses.method_names_from_class)

    def serialized(self: Any, action_result: Any) -> Any:
        answer = plain_json(self, action_result)
        return answer if answer is not None else generic_serialized(self, action_result)

    responses.BaseResponse.serialized = serialized  # type: ignore[method-assign]
    Table.query = partition_query  # type: ignore[method-assign,assignment]
    DynamoDBStreamsBackend.get_records = bounded_get_records  # type: ignore[method-assign,assignment]
    parsed = functools.lru_cache(maxsize=_PARSED_UPDATES)(generic_parse_update)
    UpdateExpressionParser.make = staticmethod(parsed)  # type: ignore[method-assign,assignment]
    validators.deepcopy = copied  # type: ignore[assignment]


def copied(value: Any) -> Any:
    """An independent copy of `value`, as deepcopy makes it: through pickle for an expression's
    tree, whose plain nodes pickle exactly (anything else by deepcopy itself)."""
    if isinstance(value, Node):
        return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    return copy.deepcopy(value)


class DirectJsonTargets:
    """A WSGI layer over moto's application that hands DynamoDB and DynamoDB Streams requests
    to their handler directly, past Flask (see the module's docstring); any other request
    goes on to the application."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        target = str(environ.get("HTTP_X_AMZ_TARGET", "")).split(".", 1)[0]
        dispatch = _JSON_TARGET_HANDLERS.get(target)
        if dispatch is None:
            return self._app(environ, start_response)
        request = BackendRequest(environ)
        try:
            status, headers, body = dispatch(request, request.raw_url, dict(request.headers))
        except HTTPException as error:  # moto's errors are answers (JsonRESTError's body)
            return error(environ, start_response)
        except ClientError as error:  # as moto's Flask view answers one
            status, headers, body = 400, {}, error.response["Error"]["Message"]
        # The answer as moto's Flask view makes it (Flask's Response: its default content type).
        return Response(response=body, status=status, headers=headers)(environ, start_response)


def bounded_get_records(backend: DynamoDBStreamsBackend, iterator_arn: str, limit: int) -> Any:
    """GetRecords of at most GET_RECORDS_MAX_BYTES, then forget the oldest iterators beyond
    MAX_SHARD_ITERATORS (a dict keeps the order they were issued in)."""
    answer = generic_get_records(backend, iterator_arn, limit)
    kept = _records_within(answer["Records"], GET_RECORDS_MAX_BYTES)
    if kept < len(answer["Records"]):  # answered again with fewer: the next iterator follows
        del backend.shard_iterators[answer["NextShardIterator"]]
        answer = generic_get_records(backend, iterator_arn, kept)
    iterators = backend.shard_iterators
    while len(iterators) > MAX_SHARD_ITERATORS:
        del iterators[next(iter(iterators))]
    return answer


def _records_within(records: list[dict[str, Any]], max_bytes: int) -> int:
    """How many of the records, from the first, fit in max_bytes (their JSON's size, a little
    more than AWS counts); at least one, so that a shard never stalls."""
    total = 0
    for count, record in enumerate(records):
        total += len(json.dumps(record, default=_epoch_seconds))
        if total > max_bytes:
            return max(count, 1)
    return len(records)


def partition_query(table: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
    """Table.query, reading only the partition when it queries the table itself. The embedded
    AWS serves one request at a time, so shadowing `all_items` for the call is safe."""
    index_name = _QUERY_PARAMETERS.bind(table, hash_key, *args, **kwargs).arguments.get(
        "index_name"
    )
    if index_name or hash_key is None or not table.range_key_attr:
        return generic_query(table, hash_key, *args, **kwargs)
    partition = table.items.get(hash_key, {})  # .get: no empty partition is created
    table.all_items = lambda: list(partition.values())  # type: ignore[method-assign,assignment]
    try:
        return generic_query(table, hash_key, *args, **kwargs)
    finally:
        del table.all_items


def plain_json(handler: Any, action_result: Any) -> tuple[int, dict[str, Any], str] | None:
    """The response for a plain-JSON operation's result; None for anything else."""
    result = action_result.result
    operation = (handler.boto3_service_name, handler._get_action())
    if not isinstance(result, dict) or operation not in _PLAIN_JSON_OPERATIONS:
        return None
    members = _output_members(*operation)
    body = json.dumps(
        {key: value for key, value in result.items() if key in members and value is not None},
        default=_epoch_seconds,
    )
    return 200, {"Content-Type": _CONTENT_TYPE, **handler.response_headers}, body


@functools.cache
def _output_members(service: str, operation: str) -> frozenset[str]:
    output = responses.get_service_model(service).operation_model(operation).output_shape
    return frozenset(output.members) if output is not None else frozenset()


def _epoch_seconds(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        # As the generic serializer writes them: UTC, truncated to milliseconds.
        return TimestampSerializer._timestamp_unixtimestamp(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
