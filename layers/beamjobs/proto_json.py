"""Messages as the CLI and the dashboard show them in JSON: the proto field names, times as
RFC 3339 text, enums by name (so the names are the documented protos')."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message


def as_json(message: Message) -> dict[str, Any]:
    return dict(json_format.MessageToDict(message, preserving_proto_field_name=True))
