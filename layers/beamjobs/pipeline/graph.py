"""A pipeline's graph as people see it: one node per transform that runs (a leaf of the
pipeline's transform tree, reached from its roots), and an edge for each PCollection from the
transform that produces it to each that consumes it. Composite transforms are the path in a
node's name ("Count/CombinePerKey/GroupByKey"). The CLI's `jobs graph` and the dashboard draw
this one model."""

from __future__ import annotations

from dataclasses import dataclass

from beamjobs.api import pipeline_pb2


@dataclass(frozen=True)
class Node:
    transform_id: str
    name: str
    urn: str


@dataclass(frozen=True)
class Edge:
    source: str  # a node's transform id
    target: str
    pcollection_id: str
    pcollection: str  # its unique name


@dataclass(frozen=True)
class Graph:
    # In the pipeline's order: parents before their children, siblings as the SDK listed them.
    nodes: list[Node]
    edges: list[Edge]


def pcollection_names(pipeline: pipeline_pb2.Pipeline) -> dict[str, str]:
    """Each PCollection's unique name, by id (metrics name PCollections by id)."""
    return {key: p.unique_name or key for key, p in pipeline.components.pcollections.items()}


def pipeline_graph(pipeline: pipeline_pb2.Pipeline) -> Graph:
    transforms = pipeline.components.transforms
    leaves: list[str] = []
    seen: set[str] = set()
    pending = list(reversed(pipeline.root_transform_ids))
    while pending:  # depth first, without recursion (a hostile pipeline may nest deeply)
        transform_id = pending.pop()
        if transform_id in seen or transform_id not in transforms:
            continue
        seen.add(transform_id)
        children = transforms[transform_id].subtransforms
        if children:
            pending.extend(reversed(children))
        else:
            leaves.append(transform_id)
    producers: dict[str, str] = {}
    for transform_id in leaves:
        for pcollection_id in transforms[transform_id].outputs.values():
            producers.setdefault(pcollection_id, transform_id)
    edges = [
        Edge(
            producers[pcollection_id],
            transform_id,
            pcollection_id,
            pipeline.components.pcollections[pcollection_id].unique_name or pcollection_id,
        )
        for transform_id in leaves
        for pcollection_id in dict.fromkeys(transforms[transform_id].inputs.values())
        if pcollection_id in producers
    ]
    nodes = [Node(t, transforms[t].unique_name or t, transforms[t].spec.urn) for t in leaves]
    return Graph(nodes, edges)
