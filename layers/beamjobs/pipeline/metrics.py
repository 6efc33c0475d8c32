"""A job's metrics as people read them: Beam's MonitoringInfos (as a worker published them in
MetricResults) decoded into counters, distributions, gauges and element counts, each with its
attempted and committed value. Payloads are Beam's standard coders: a signed 64-bit VarInt, a
big-endian double."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from beamjobs.api import job_api_pb2, metrics_pb2

SUM_INT64 = "beam:metrics:sum_int64:v1"
SUM_DOUBLE = "beam:metrics:sum_double:v1"
DISTRIBUTION_INT64 = "beam:metrics:distribution_int64:v1"
DISTRIBUTION_DOUBLE = "beam:metrics:distribution_double:v1"
LATEST_INT64 = "beam:metrics:latest_int64:v1"
LATEST_DOUBLE = "beam:metrics:latest_double:v1"
USER_PREFIX = "beam:metric:user:"
ELEMENT_COUNT = "beam:metric:element_count:v1"
# Beam's execution-time metric: the milliseconds a step spent starting, processing and finishing
# bundles (sampled by the SDK harness). The Java harness reports the three parts alone.
TOTAL_MSECS = "beam:metric:ptransform_execution_time:total_msecs:v1"
_MSECS_PARTS = frozenset(
    f"beam:metric:pardo_execution_time:{part}_bundle_msecs:v1"
    for part in ("start", "process", "finish")
)

COUNTER, DISTRIBUTION, GAUGE, ELEMENTS = "counter", "distribution", "gauge", "element_count"
WALL_TIME = "wall_time_ms"
_WALL_TIME_PART = "wall_time_part"
_KINDS = {
    SUM_INT64: COUNTER,
    SUM_DOUBLE: COUNTER,
    DISTRIBUTION_INT64: DISTRIBUTION,
    DISTRIBUTION_DOUBLE: DISTRIBUTION,
    LATEST_INT64: GAUGE,
    LATEST_DOUBLE: GAUGE,
}


@dataclass
class Metric:
    """One metric: a user's counter, distribution or gauge of a step, a step's wall time (ms),
    or the element count of a PCollection. Values are numbers, or for a distribution {count,
    sum, min, max, mean}, or for a gauge {value, timestamp_ms}; None where the job published
    none."""

    kind: str
    step: str
    namespace: str
    name: str
    pcollection: str = ""
    # The PCollection's unique name in the pipeline (metrics name it by id).
    pcollection_name: str = ""
    attempted: Any = None
    committed: Any = None
    labels: dict[str, str] = field(default_factory=dict)


def job_metrics(
    results: job_api_pb2.MetricResults, pcollection_names: Mapping[str, str] | None = None
) -> list[Metric]:
    """The user metrics, steps' wall times and element counts in `results` (PCollections named
    by `pcollection_names`, by id); other system metrics are left out."""
    names = pcollection_names or {}
    metrics: dict[tuple[Any, ...], Metric] = {}
    # A step's wall time in parts, (step, column) -> ms: where a harness reports no total.
    parts: dict[tuple[str, str], int] = {}
    for column, infos in (("attempted", results.attempted), ("committed", results.committed)):
        for raw in infos:
            try:
                info = metrics_pb2.MonitoringInfo.FromString(raw)
                kind = _kind(info)
                value = None if kind is None else decode(info.type, info.payload)
            except (DecodeError, ValueError):  # one bad metric must not hide the others
                continue
            if kind == _WALL_TIME_PART:
                part = (info.labels.get("PTRANSFORM", ""), column)
                parts[part] = parts.get(part, 0) + (value or 0)
                continue
            if kind is None:
                continue
            labels = dict(info.labels)
            if kind == ELEMENTS and pcollection_names and labels.get("PCOLLECTION") not in names:
                continue  # a PCollection of the runner's own making (e.g. a fused stage's)
            key = (kind, info.urn, tuple(sorted(labels.items())))
            metric = metrics.setdefault(
                key,
                Metric(
                    kind,
                    labels.get("PTRANSFORM", ""),
                    labels.get("NAMESPACE", ""),
                    labels.get("NAME", ""),
                    labels.get("PCOLLECTION", ""),
                    names.get(labels.get("PCOLLECTION", ""), ""),
                    labels=labels,
                ),
            )
            setattr(metric, column, value)
    totalled = {metric.step for metric in metrics.values() if metric.kind == WALL_TIME}
    for (step, column), summed in parts.items():
        if step not in totalled:
            labels = {"PTRANSFORM": step}
            metric = metrics.setdefault(
                (WALL_TIME, TOTAL_MSECS, tuple(labels.items())),
                Metric(WALL_TIME, step, "", "", labels=labels),
            )
            setattr(metric, column, summed)
    return sorted(metrics.values(), key=lambda m: (m.kind, m.step, m.pcollection, m.name))


def _kind(info: metrics_pb2.MonitoringInfo) -> str | None:
    if info.urn == ELEMENT_COUNT and info.type == SUM_INT64:
        return ELEMENTS
    if info.urn == TOTAL_MSECS and info.type == SUM_INT64:
        return WALL_TIME
    if info.urn in _MSECS_PARTS and info.type == SUM_INT64:
        return _WALL_TIME_PART
    if info.urn.startswith(USER_PREFIX):
        return _KINDS.get(info.type)
    return None


def decode(type_urn: str, payload: bytes) -> Any:
    """A payload of one of the standard metric types (ValueError when it is cut short)."""
    reader = _Reader(payload)
    if type_urn == SUM_INT64:
        return reader.varint()
    if type_urn == SUM_DOUBLE:
        return reader.double()
    if type_urn in (DISTRIBUTION_INT64, DISTRIBUTION_DOUBLE):
        count = reader.varint()
        read = reader.varint if type_urn == DISTRIBUTION_INT64 else reader.double
        total, low, high = read(), read(), read()
        mean = total / count if count else None
        return {"count": count, "sum": total, "min": low, "max": high, "mean": mean}
    if type_urn in (LATEST_INT64, LATEST_DOUBLE):
        timestamp = reader.varint()
        value = reader.varint() if type_urn == LATEST_INT64 else reader.double()
        return {"value": value, "timestamp_ms": timestamp}
    raise ValueError(f"not a metric type read here: {type_urn}")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def varint(self) -> int:
        """Beam's VarIntCoder: a 64-bit two's complement value, 7 bits a byte."""
        value = shift = 0
        while True:
            if self._at >= len(self._data) or shift > 63:
                raise ValueError("a VarInt cut short")
            byte = self._data[self._at]
            self._at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        value &= (1 << 64) - 1
        return value - (1 << 64) if value >= 1 << 63 else value

    def double(self) -> float:
        if self._at + 8 > len(self._data):
            raise ValueError("a double cut short")
        (value,) = struct.unpack_from(">d", self._data, self._at)
        self._at += 8
        return float(value)
