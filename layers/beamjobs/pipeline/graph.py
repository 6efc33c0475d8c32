"""A pipeline's graph as people see it: one node per transform that runs (a leaf of the
pipeline's transform tree, reached from its roots), and an edge for each PCollection from the
transform that produces it to each that consumes it. The composite transforms holding them are
a tree beside ("Count" holds "Count/CombinePerKey", which holds its GroupByKey): each node and
composite names its parent. The CLI's `jobs graph` and the dashboard draw this one model."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from beamjobs.api import pipeline_pb2


@dataclass(frozen=True)
class Node:
    transform_id: str
    name: str
    urn: str
    parent: str = ""  # the composite holding it (its transform id), "" at the top


@dataclass(frozen=True)
class Composite:
    transform_id: str
    name: str
    parent: str = ""


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
    composites: list[Composite]


def pcollection_names(pipeline: pipeline_pb2.Pipeline) -> dict[str, str]:
    """Each PCollection's name as people know it, by id (metrics name PCollections by id): the
    step that produces it, with the output's tag when that step has several ("Split.errors").
    SDKs' own names are ids ("pcollection_3") or length-prefixed ("6Slowly.None"); one no
    step produces keeps its own."""
    transforms = pipeline.components.transforms
    names = {key: p.unique_name or key for key, p in pipeline.components.pcollections.items()}
    leaves, _ = _tree(pipeline)
    for transform_id, tag, pcollection_id in _outputs(transforms, leaves):
        if pcollection_id in names:
            step = transforms[transform_id]
            name = step.unique_name or transform_id
            names[pcollection_id] = name if len(step.outputs) == 1 else f"{name}.{tag}"
    return names


def pipeline_graph(pipeline: pipeline_pb2.Pipeline) -> Graph:
    transforms = pipeline.components.transforms
    leaves, parents = _tree(pipeline)
    producers = {pcollection_id: t for t, _, pcollection_id in _outputs(transforms, leaves)}
    names = pcollection_names(pipeline)
    edges = [
        Edge(producers[pcollection_id], transform_id, pcollection_id, names[pcollection_id])
        for transform_id in leaves
        for pcollection_id in dict.fromkeys(transforms[transform_id].inputs.values())
        if pcollection_id in producers and pcollection_id in names
    ]
    nodes = [
        Node(t, transforms[t].unique_name or t, transforms[t].spec.urn, parents[t]) for t in leaves
    ]
    composites = [
        Composite(t, transforms[t].unique_name or t, parent)
        for t, parent in parents.items()
        if transforms[t].subtransforms
    ]
    return Graph(nodes, edges, composites)


def _tree(pipeline: pipeline_pb2.Pipeline) -> tuple[list[str], dict[str, str]]:
    """The transforms that run, reached from the roots, parents' order kept; and the parent of
    every transform reached (composites included), "" for a root."""
    transforms = pipeline.components.transforms
    leaves: list[str] = []
    parents: dict[str, str] = {}
    pending = [(root, "") for root in reversed(pipeline.root_transform_ids)]
    while pending:  # depth first, without recursion (a hostile pipeline may nest deeply)
        transform_id, parent = pending.pop()
        if transform_id in parents or transform_id not in transforms:
            continue
        parents[transform_id] = parent
        children = transforms[transform_id].subtransforms
        if children:
            pending.extend((child, transform_id) for child in reversed(children))
        else:
            leaves.append(transform_id)
    return leaves, parents


def _outputs(transforms: Mapping[str, Any], leaves: list[str]) -> Iterator[tuple[str, str, str]]:
    """(step, tag, PCollection) for each output of a step that runs, its first producer only."""
    seen: set[str] = set()
    for transform_id in leaves:
        for tag, pcollection_id in transforms[transform_id].outputs.items():
            if pcollection_id not in seen:
                seen.add(pcollection_id)
                yield transform_id, tag, pcollection_id
