"""Protos as JSON: as the CLI and the dashboard show them (the proto field names, times as RFC
3339 text, enums by name, so the names are the documented protos'), and as a handler's answer
travels to the shim (the same, with every field, and read back into the same message)."""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def as_json(message: Message) -> dict[str, Any]:
    return dict(json_format.MessageToDict(message, preserving_proto_field_name=True))


def to_answer(message: Message) -> dict[str, Any]:
    """A handler's answer: the message as JSON, fields at their defaults included."""
    return dict(
        json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


def from_answer(answer: dict[str, Any], message: M) -> M:
    """`message` filled from a handler's answer."""
    return json_format.ParseDict(answer, message)
