"""Prism runs no EMBEDDED environment: the mirror hands it the job's EMBEDDED Python environments
as PROCESS ones, started by Beam's boot (beamjobs.upstream.prism.process_environments)."""

from __future__ import annotations

from beamjobs.api import pipeline_pb2
from beamjobs.pipeline.environments import DOCKER, EMBEDDED, EXTERNAL, PROCESS
from beamjobs.upstream.prism import ProcessHarness, process_environments


def test_embedded_environments_become_process_ones_and_the_others_stay():
    pipeline = pipeline_pb2.Pipeline()
    for env_id, urn in (("py", EMBEDDED), ("ext", EXTERNAL), ("img", DOCKER)):
        pipeline.components.environments[env_id].urn = urn
        pipeline.components.environments[env_id].payload = env_id.encode()
    harness = ProcessHarness("/jobs/j/boot", {"PYTHONPATH": "/w/site-packages"})

    rewritten = pipeline_pb2.Pipeline.FromString(
        process_environments(pipeline.SerializeToString(), harness)
    ).components.environments

    assert rewritten["py"].urn == PROCESS
    payload = pipeline_pb2.ProcessPayload.FromString(rewritten["py"].payload)
    assert payload.command == "/jobs/j/boot"
    assert dict(payload.env) == {"PYTHONPATH": "/w/site-packages"}
    assert (rewritten["ext"].urn, rewritten["ext"].payload) == (EXTERNAL, b"ext")
    assert (rewritten["img"].urn, rewritten["img"].payload) == (DOCKER, b"img")
