"""Make a pipeline's environments runnable here before FnApiRunner sees them."""

from __future__ import annotations

import logging
import multiprocessing
import shlex
import sys
from pathlib import Path

from apache_beam import version as beam_version
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2, endpoints_pb2

from beamjobs.pipeline import sdk_images
from beamjobs.pipeline.environments import unsupported_environments_message
from beamjobs.worker.go_boot import is_worker_binary
from beamjobs.worker.image_environments import (
    THIS_PYTHON,
    ImageEnvironments,
    Report,
    UnrunnableEnvironment,
)
from beamjobs.worker.packages import staged_file_name

logger = logging.getLogger(__name__)

DOCKER = common_urns.environments.DOCKER.urn
PROCESS = common_urns.environments.PROCESS.urn


def run_docker_here(
    pipeline: beam_runner_api_pb2.Pipeline,
    images: ImageEnvironments,
    report: Report,
    harnesses: Path,
) -> None:
    """Without a container runtime, DOCKER environments of Beam's Python SDK images run
    anyway: the image of this worker's own Beam and Python in the worker's process (whose
    environment is that image's), any other from a stand-in of that image as a PROCESS
    environment; Beam's Go SDK image as the pipeline's own Go worker binary (which the Go SDK
    stages), and Beam's Java SDK images as that release's Java SDK harness with the pipeline's
    jars, each run as the image's boot would, with its files under `harnesses`. Raises
    UnrunnableEnvironment for any other image."""
    for env_id, env in pipeline.components.environments.items():
        if env.urn != DOCKER:
            continue
        image = sdk_images.classify(
            beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
        )
        if isinstance(image, sdk_images.OtherSdkImage) and image.language == "Go":
            _check_staged_by(image, env_id, env)
            _run_as_process(env, ["beamjobs.worker.go_boot"], harnesses)
            report(
                f"the DOCKER environment {env_id} ({image.image}) runs the pipeline's own Go "
                "worker binary, as that image's boot would: no container is started"
            )
            continue
        if isinstance(image, sdk_images.OtherSdkImage) and image.language == "Java":
            _check_staged_by(image, env_id, env)
            jars = images.java_jars_for(image, report)
            _run_as_process(env, ["beamjobs.worker.java_boot", f"--jars={jars}"], harnesses)
            report(
                f"the DOCKER environment {env_id} ({image.image}) runs Beam's Java SDK harness "
                f"{image.beam} with the pipeline's jars, as that image's boot would: no "
                "container is started"
            )
            continue
        if isinstance(image, sdk_images.OtherSdkImage):
            raise UnrunnableEnvironment(
                f"the environment {env_id} needs {image.image}, the image of Beam's "
                f"{image.language} SDK, and this worker runs Python, Java and Go SDK harnesses "
                "only, without containers: submit with --environment_type=LOOPBACK (your SDK "
                "process runs the user code)"
            )
        if isinstance(image, sdk_images.CustomImage):
            raise UnrunnableEnvironment(
                f"the environment {env_id} needs the container image {image.image}, which is "
                "not one of Beam's Python SDK images (apache/beam_python3.X_sdk:VERSION), and "
                "this worker cannot run containers. If that image is built FROM a Beam SDK "
                "image, submit with --environment_type=LOOPBACK (your SDK process runs the "
                "user code), or use Beam's SDK image with --requirements_file listing the "
                "packages your image adds"
            )
        if image.beam == beam_version.__version__ and image.python == THIS_PYTHON:
            env.urn, env.payload = python_urns.EMBEDDED_PYTHON, b""
            report(
                f"the DOCKER environment {env_id} ({image.image}) runs in the worker's own "
                f"process, whose Python environment is that image's: no container is started"
            )
            continue
        python = images.python_for(image, report)
        env.urn = PROCESS
        env.payload = beam_runner_api_pb2.ProcessPayload(
            command=f"{python} -m beamjobs.worker.boot"
        ).SerializeToString()
        report(
            f"the DOCKER environment {env_id} ({image.image}) runs its SDK harness in "
            f"processes of that image's environment (Beam {image.beam}, Python "
            f"{image.python}): no container is started"
        )


def _check_staged_by(
    image: sdk_images.OtherSdkImage, env_id: str, env: beam_runner_api_pb2.Environment
) -> None:
    """Refuse a Go or Java SDK image whose environment lacks what that SDK stages (a pipeline
    of another SDK naming that image): its harness would have nothing to run."""
    if image.language == "Go":
        staged = any(is_worker_binary(a) for a in env.dependencies)
        what = "the Go worker binary the Go SDK stages"
    else:
        staged = any(staged_file_name(a).endswith(".jar") for a in env.dependencies)
        what = "the jars the Java SDK stages"
    if not staged:
        raise UnrunnableEnvironment(
            f"the environment {env_id} needs {image.image}, the image of Beam's "
            f"{image.language} SDK, but has none of {what}: submit a {image.language} "
            "pipeline with it, or your SDK's own image, or --environment_type=LOOPBACK (your "
            "SDK process runs the user code)"
        )


def _run_as_process(
    env: beam_runner_api_pb2.Environment, module: list[str], harnesses: Path
) -> None:
    """Make `env` a PROCESS environment whose command is a boot module of this worker's."""
    command = [sys.executable, "-m", *module, f"--semi_persist_dir={harnesses}"]
    env.urn = PROCESS
    payload = beam_runner_api_pb2.ProcessPayload(command=shlex.join(command))
    env.payload = payload.SerializeToString()


def use_worker_pool(pipeline: beam_runner_api_pb2.Pipeline, address: str) -> None:
    """On Fargate the pipeline's SDK image runs beside the worker as a worker pool (see
    beamjobs.aws.fargate): DOCKER environments become EXTERNAL ones served by it."""
    payload = beam_runner_api_pb2.ExternalPayload(
        endpoint=endpoints_pb2.ApiServiceDescriptor(url=address)
    ).SerializeToString()
    for env in pipeline.components.environments.values():
        if env.urn == DOCKER:
            env.urn, env.payload = common_urns.environments.EXTERNAL.urn, payload


def prepare(
    pipeline: beam_runner_api_pb2.Pipeline,
    *,
    images: ImageEnvironments,
    report: Report,
    harnesses: Path,
    worker_pool: str | None = None,
) -> None:
    """Rewrite what can run here, refuse what cannot, and report what the user should know.
    With a worker pool (an SDK sidecar), DOCKER environments run there; without, here (the
    files of the harnesses started for them under `harnesses`)."""
    if worker_pool:
        use_worker_pool(pipeline, worker_pool)
    else:
        run_docker_here(pipeline, images, report, harnesses)
    message = unsupported_environments_message(
        {env.urn for env in pipeline.components.environments.values()}
    )
    if message is not None:
        raise UnrunnableEnvironment(message)


def parallelism(pipeline: beam_runner_api_pb2.Pipeline, options: PipelineOptions) -> int:
    """Honour --direct_num_workers and --direct_running_mode as Beam's direct runner does:
    EMBEDDED environments run in that many harnesses (threads, or processes). Returns the
    number of workers FnApiRunner should use.

    One worker process is the job's worker itself, which is already a process of its own:
    Beam's subprocess harness would add nothing but its gRPC hop, which slowed a CPU-bound
    pipeline by a third (Beam's DirectRunner: 7.6 s in a subprocess, 5.8 s in process)."""
    direct = options.view_as(DirectOptions)
    workers = direct.direct_num_workers
    workers = multiprocessing.cpu_count() if workers == 0 else max(1, workers or 1)
    mode = direct.direct_running_mode
    if mode == "multi_processing" and workers > 1:
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
