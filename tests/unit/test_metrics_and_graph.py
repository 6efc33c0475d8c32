"""A job's metrics decoded from Beam's MonitoringInfos, and its graph from the pipeline's
transform tree."""

import struct

import pytest

from beamjobs.api import job_api_pb2, metrics_pb2, pipeline_pb2
from beamjobs.pipeline.graph import pcollection_names, pipeline_graph
from beamjobs.pipeline.metrics import ELEMENT_COUNT, decode, job_metrics


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _info(urn, type_, payload, **labels):
    return metrics_pb2.MonitoringInfo(
        urn=urn, type=type_, payload=payload, labels=labels
    ).SerializeToString()


def test_counters_distributions_gauges_and_element_counts_are_decoded():
    user = {"PTRANSFORM": "Count", "NAMESPACE": "ns"}
    results = job_api_pb2.MetricResults(
        attempted=[
            _info(
                "beam:metric:user:sum_int64:v1",
                "beam:metrics:sum_int64:v1",
                _varint(-3),
                NAME="c",
                **user,
            ),
            _info(
                "beam:metric:user:distribution_double:v1",
                "beam:metrics:distribution_double:v1",
                _varint(2) + struct.pack(">ddd", 3.0, 1.0, 2.0),
                NAME="d",
                **user,
            ),
            _info(
                "beam:metric:user:latest_int64:v1",
                "beam:metrics:latest_int64:v1",
                _varint(1700) + _varint(9),
                NAME="g",
                **user,
            ),
            _info(
                "beam:metric:element_count:v1",
                "beam:metrics:sum_int64:v1",
                _varint(12),
                PCOLLECTION="words",
            ),
            # A step's wall time; another system metric, and a malformed payload, neither
            # shows, neither breaks the rest.
            _info(
                "beam:metric:ptransform_execution_time:total_msecs:v1",
                "beam:metrics:sum_int64:v1",
                _varint(1500),
                PTRANSFORM="Count",
            ),
            _info(
                "beam:metric:sampled_byte_size:v1",
                "beam:metrics:distribution_int64:v1",
                _varint(1) + _varint(5) + _varint(5) + _varint(5),
                PCOLLECTION="words",
            ),
            _info(
                "beam:metric:user:sum_int64:v1",
                "beam:metrics:sum_int64:v1",
                b"\x80",
                NAME="bad",
                **user,
            ),
        ],
        committed=[
            _info(
                "beam:metric:user:sum_int64:v1",
                "beam:metrics:sum_int64:v1",
                _varint(-3),
                NAME="c",
                **user,
            ),
        ],
    )
    metrics = {m.name or m.pcollection or m.kind: m for m in job_metrics(results)}

    assert sorted(metrics) == ["c", "d", "g", "wall_time_ms", "words"]
    assert (metrics["wall_time_ms"].step, metrics["wall_time_ms"].attempted) == ("Count", 1500)
    assert (metrics["c"].kind, metrics["c"].attempted, metrics["c"].committed) == (
        "counter",
        -3,
        -3,
    )
    assert metrics["c"].step == "Count" and metrics["c"].namespace == "ns"
    assert metrics["d"].attempted == {"count": 2, "sum": 3.0, "min": 1.0, "max": 2.0, "mean": 1.5}
    assert metrics["d"].committed is None
    assert metrics["g"].attempted == {"value": 9, "timestamp_ms": 1700}
    assert (metrics["words"].kind, metrics["words"].attempted) == ("element_count", 12)


def test_a_wall_time_reported_in_parts_is_their_sum_and_a_total_reported_stands():
    # Java's harness reports a step's start, process and finish milliseconds, and no total;
    # Python's reports the total beside the parts.
    def msecs(part, value, step):
        urn = f"beam:metric:pardo_execution_time:{part}_bundle_msecs:v1"
        return _info(urn, "beam:metrics:sum_int64:v1", _varint(value), PTRANSFORM=step)

    total = "beam:metric:ptransform_execution_time:total_msecs:v1"
    results = job_api_pb2.MetricResults(
        committed=[
            msecs("start", 1, "Split"),
            msecs("process", 40, "Split"),
            msecs("finish", 2, "Split"),
            msecs("process", 7, "Count"),
            _info(total, "beam:metrics:sum_int64:v1", _varint(9), PTRANSFORM="Count"),
        ]
    )
    walls = {m.step: m for m in job_metrics(results) if m.kind == "wall_time_ms"}

    assert {step: (m.attempted, m.committed) for step, m in walls.items()} == {
        "Count": (None, 9),
        "Split": (None, 43),
    }
    assert walls["Split"].labels == {"PTRANSFORM": "Split"}


@pytest.mark.parametrize("payload", [b"", b"\xff" * 11])
def test_a_cut_or_overlong_varint_is_a_value_error(payload):
    with pytest.raises(ValueError):
        decode("beam:metrics:sum_int64:v1", payload)


def test_the_graph_has_a_node_per_leaf_transform_and_an_edge_per_consumed_pcollection():
    pipeline = pipeline_pb2.Pipeline(root_transform_ids=["read", "count", "orphan-root"])
    transforms = pipeline.components.transforms
    transforms["read"].CopyFrom(
        pipeline_pb2.PTransform(unique_name="Read", outputs={"out": "lines"})
    )
    transforms["count"].CopyFrom(
        pipeline_pb2.PTransform(
            unique_name="Count",
            subtransforms=["split", "sum"],
            inputs={"in": "lines"},
            outputs={"out": "counts"},
        )
    )
    transforms["split"].CopyFrom(
        pipeline_pb2.PTransform(
            unique_name="Count/Split", inputs={"in": "lines"}, outputs={"out": "words"}
        )
    )
    transforms["sum"].CopyFrom(
        pipeline_pb2.PTransform(
            unique_name="Count/Sum",
            inputs={"in": "words", "side": "lines"},
            outputs={"out": "counts"},
        )
    )
    for pcollection in ("lines", "words", "counts"):
        pipeline.components.pcollections[pcollection].unique_name = pcollection.title()

    graph = pipeline_graph(pipeline)

    assert [n.name for n in graph.nodes] == ["Read", "Count/Split", "Count/Sum"]
    assert [n.parent for n in graph.nodes] == ["", "count", "count"]
    assert [(c.transform_id, c.name, c.parent) for c in graph.composites] == [
        ("count", "Count", "")
    ]
    assert sorted((e.source, e.target, e.pcollection) for e in graph.edges) == [
        ("read", "split", "Read"),
        ("read", "sum", "Read"),
        ("split", "sum", "Count/Split"),
    ]


def test_pcollections_are_named_after_the_step_that_produces_them():
    pipeline = pipeline_pb2.Pipeline(root_transform_ids=["split", "orphan"])
    pipeline.components.transforms["split"].CopyFrom(
        pipeline_pb2.PTransform(
            unique_name="Split", outputs={"None": "pcollection_1", "errors": "pcollection_2"}
        )
    )
    pipeline.components.transforms["orphan"].CopyFrom(
        pipeline_pb2.PTransform(unique_name="Words", outputs={"None": "pcollection_3"})
    )
    for key in ("pcollection_1", "pcollection_2", "pcollection_3", "pcollection_4"):
        pipeline.components.pcollections[key].unique_name = f"12{key}"

    assert pcollection_names(pipeline) == {
        "pcollection_1": "Split.None",
        "pcollection_2": "Split.errors",
        "pcollection_3": "Words",
        "pcollection_4": "12pcollection_4",  # produced by no step that runs
    }


def test_element_counts_of_pcollections_the_pipeline_never_named_are_the_runners_own():
    results = job_api_pb2.MetricResults(
        attempted=[
            _info(ELEMENT_COUNT, "beam:metrics:sum_int64:v1", _varint(7), PCOLLECTION=key)
            for key in ("words", "pcollection_9")
        ]
    )

    named = job_metrics(results, {"words": "Split"})

    assert [(m.pcollection, m.pcollection_name) for m in named] == [("words", "Split")]
    assert len(job_metrics(results)) == 2  # no names given: nothing is left out
