"""Times on the wire: Timestamps, and the ISO 8601 text of a JobMessage's time."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def message_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()
