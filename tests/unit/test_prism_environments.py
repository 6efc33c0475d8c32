"""Prism runs no EMBEDDED environment, and here no DOCKER one: the mirror hands it the job's
EMBEDDED Python environments, and DOCKER ones of the workers' own SDK image, as PROCESS ones
started by Beam's boot (beamjobs.upstream.prism)."""

from __future__ import annotations

import sys
from importlib.metadata import version

import pytest

from beamjobs.api import pipeline_pb2
from beamjobs.pipeline.environments import DOCKER, EMBEDDED, EXTERNAL, PROCESS
from beamjobs.upstream.client import UpstreamError
from beamjobs.upstream.prism import (
    ProcessHarness,
    WorkerPython,
    process_environments,
    runnable_on_prism,
)

THIS_PYTHON = "{}.{}".format(*sys.version_info[:2])


def _docker(image: str) -> bytes:
    return pipeline_pb2.DockerPayload(container_image=image).SerializeToString()


def _pipeline(**environments: tuple[str, bytes]) -> bytes:
    pipeline = pipeline_pb2.Pipeline()
    for env_id, (urn, payload) in environments.items():
        pipeline.components.environments[env_id].urn = urn
        pipeline.components.environments[env_id].payload = payload
    return pipeline.SerializeToString()


def _environments(pipeline: bytes):
    return pipeline_pb2.Pipeline.FromString(pipeline).components.environments


def test_the_named_environments_become_process_ones_and_the_others_stay():
    pipeline = _pipeline(py=(EMBEDDED, b"py"), ext=(EXTERNAL, b"ext"), img=(DOCKER, b"img"))
    harness = ProcessHarness("/jobs/j/boot", {"PYTHONPATH": "/w/site-packages"})

    rewritten = _environments(process_environments(pipeline, {"py"}, harness))

    assert rewritten["py"].urn == PROCESS
    payload = pipeline_pb2.ProcessPayload.FromString(rewritten["py"].payload)
    assert payload.command == "/jobs/j/boot"
    assert dict(payload.env) == {"PYTHONPATH": "/w/site-packages"}
    assert (rewritten["ext"].urn, rewritten["ext"].payload) == (EXTERNAL, b"ext")
    assert (rewritten["img"].urn, rewritten["img"].payload) == (DOCKER, b"img")


def test_the_workers_interpreter_tells_its_python_and_beam_releases():
    worker = WorkerPython.of(sys.executable)
    assert (worker.python, worker.beam) == (THIS_PYTHON, version("apache-beam"))
    own = f"apache/beam_python{THIS_PYTHON}_sdk:{worker.beam}"
    assert worker.is_own_image(own)
    assert worker.is_own_image(f"registry.example/{own}")
    assert not worker.is_own_image(f"apache/beam_python{THIS_PYTHON}_sdk:2.50.0")
    assert not worker.is_own_image(f"apache/beam_python3.9_sdk:{worker.beam}")
    assert not worker.is_own_image(f"apache/beam_java17_sdk:{worker.beam}")
    assert not worker.is_own_image("my/image:latest")


@pytest.fixture
def own_image() -> str:
    return f"apache/beam_python{THIS_PYTHON}_sdk:{version('apache-beam')}"


def test_embedded_and_the_workers_own_image_run_as_the_boot_and_external_stays(tmp_path, own_image):
    pipeline = _pipeline(
        py=(EMBEDDED, b""), own=(DOCKER, _docker(own_image)), ext=(EXTERNAL, b"ext")
    )

    rewritten = _environments(runnable_on_prism(pipeline, tmp_path, "/boot", sys.executable))

    assert (rewritten["py"].urn, rewritten["own"].urn) == (PROCESS, PROCESS)
    payload = pipeline_pb2.ProcessPayload.FromString(rewritten["own"].payload)
    assert payload.command == str(tmp_path / "boot")
    assert (tmp_path / "venv" / "bin" / "python").exists()
    assert (rewritten["ext"].urn, rewritten["ext"].payload) == (EXTERNAL, b"ext")


def test_another_image_is_refused_naming_the_one_that_runs(tmp_path, own_image):
    old = f"apache/beam_python{THIS_PYTHON}_sdk:2.50.0"
    pipeline = _pipeline(py=(EMBEDDED, b""), old=(DOCKER, _docker(old)))

    with pytest.raises(UpstreamError) as refused:
        runnable_on_prism(pipeline, tmp_path, "/boot", sys.executable)

    assert refused.value.code == "FAILED_PRECONDITION"
    assert f"old ({old})" in str(refused.value) and own_image in str(refused.value)
    assert "LOOPBACK" in str(refused.value)
    assert not any(tmp_path.iterdir())  # no harness made


def test_a_pipeline_with_nothing_to_run_as_the_boot_is_left_as_it_is_and_no_venv_is_made(
    tmp_path,
):
    pipeline = _pipeline(ext=(EXTERNAL, b"ext"), proc=(PROCESS, b"proc"))
    assert runnable_on_prism(pipeline, tmp_path, "/boot", sys.executable) == pipeline
    assert not any(tmp_path.iterdir())
