"""The invoker of local mode: the handler functions called in this process, with the event
serialized as Lambda would."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from beamjobs.aws.invoker import Handler, encode


@dataclass(frozen=True)
class LocalContext:
    """The parts of Lambda's context object that the handlers' Powertools utilities read."""

    function_name: str
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:local"
    aws_request_id: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


class InProcessInvoker:
    """Calls the handler functions in this process, with the event serialized as Lambda would."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = dict(handlers)

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        payload = encode(event)
        request_id = event.get("request_id") if isinstance(event, dict) else None
        context = LocalContext(function_name=function, aws_request_id=str(request_id or ""))
        answer = self._handlers[function](json.loads(payload), context)
        return dict(json.loads(json.dumps(answer)))
