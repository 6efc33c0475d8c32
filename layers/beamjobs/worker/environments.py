"""Make a pipeline's environments runnable here before FnApiRunner sees them."""

from __future__ import annotations

import logging
import multiprocessing
import re
import sys

from apache_beam import version as beam_version
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2, endpoints_pb2

from beamjobs.environments import unsupported_environments_message

logger = logging.getLogger(__name__)

DOCKER = common_urns.environments.DOCKER.urn
# Beam's Python SDK images: apache/beam_python3.11_sdk:2.77.0 (any registry prefix).
_PYTHON_SDK_IMAGE = re.compile(r"beam_python(?P<python>\d+\.\d+)_sdk:(?P<beam>[^@\s]+)$")


class UnrunnableEnvironment(Exception):
    """An environment this worker cannot run; the message says what to use instead."""


def run_docker_in_process(pipeline: beam_runner_api_pb2.Pipeline) -> list[str]:
    """Without Docker, a DOCKER environment whose image is Beam's Python SDK at this worker's
    Beam version runs in the worker's own Python. Returns the warnings to tell the user; raises
    UnrunnableEnvironment for any other image."""
    warnings = []
    for env_id, env in pipeline.components.environments.items():
        if env.urn != DOCKER:
            continue
        image = beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
        match = _PYTHON_SDK_IMAGE.search(image)
        if match is None:
            raise UnrunnableEnvironment(
                f"the environment {env_id} needs the container image {image}, and this worker "
                "cannot run containers; use --environment_type=LOOPBACK"
            )
        if match["beam"] != beam_version.__version__:
            raise UnrunnableEnvironment(
                f"the pipeline's SDK image {image} is Beam {match['beam']}, but this worker "
                f"runs Beam {beam_version.__version__} and cannot run containers: submit with "
                f"apache-beam=={beam_version.__version__}, or use --environment_type=LOOPBACK"
            )
        env.urn = python_urns.EMBEDDED_PYTHON
        env.payload = b""
        here = "{}.{}".format(*sys.version_info[:2])
        python = "" if match["python"] == here else f" (the image has Python {match['python']})"
        warnings.append(
            f"the DOCKER environment {env_id} ({image}) runs in the worker's own Python "
            f"{here}, Beam {beam_version.__version__}{python}: no container is started"
        )
    return warnings


def use_worker_pool(pipeline: beam_runner_api_pb2.Pipeline, address: str) -> None:
    """On Fargate the pipeline's SDK image runs beside the worker as a worker pool (see
    beamjobs.fargate): DOCKER environments become EXTERNAL ones served by it."""
    payload = beam_runner_api_pb2.ExternalPayload(
        endpoint=endpoints_pb2.ApiServiceDescriptor(url=address)
    ).SerializeToString()
    for env in pipeline.components.environments.values():
        if env.urn == DOCKER:
            env.urn, env.payload = common_urns.environments.EXTERNAL.urn, payload


def prepare(pipeline: beam_runner_api_pb2.Pipeline, worker_pool: str | None = None) -> list[str]:
    """Rewrite what can run here, refuse what cannot; return warnings for the user. With a
    worker pool (an SDK sidecar), DOCKER environments run there; without, in process."""
    if worker_pool:
        use_worker_pool(pipeline, worker_pool)
        warnings = []
    else:
        warnings = run_docker_in_process(pipeline)
    message = unsupported_environments_message(
        {env.urn for env in pipeline.components.environments.values()}
    )
    if message is not None:
        raise UnrunnableEnvironment(message)
    return warnings


def parallelism(pipeline: beam_runner_api_pb2.Pipeline, options: PipelineOptions) -> int:
    """Honour --direct_num_workers and --direct_running_mode as Beam's direct runner does:
    EMBEDDED environments run in that many harnesses (threads, or processes). Returns the
    number of workers FnApiRunner should use."""
    direct = options.view_as(DirectOptions)
    workers = direct.direct_num_workers
    workers = multiprocessing.cpu_count() if workers == 0 else max(1, workers or 1)
    mode = direct.direct_running_mode
    if mode == "multi_processing":
        replacement = beam_runner_api_pb2.Environment(
            urn=python_urns.SUBPROCESS_SDK,
            payload=f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main".encode(),
        )
    elif mode == "multi_threading":
        # The payload is the environment's JSON config; {} takes Beam's defaults.
        replacement = beam_runner_api_pb2.Environment(
            urn=python_urns.EMBEDDED_PYTHON_GRPC, payload=b"{}"
        )
    else:
        return workers
    for env in pipeline.components.environments.values():
        if env.urn == python_urns.EMBEDDED_PYTHON:
            env.urn, env.payload = replacement.urn, replacement.payload
    return workers
