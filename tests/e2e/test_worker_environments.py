"""The worker's environment rules, on pipeline protos (no server needed; these import Beam, so
they live with the suites that do)."""

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2

from beamjobs.worker import environments
from beamjobs.worker.image_environments import THIS_PYTHON, ImageEnvironments
from beamjobs.worker.process_environment import boot_command


def _pipeline_with(env: beam_runner_api_pb2.Environment) -> beam_runner_api_pb2.Pipeline:
    pipeline = beam_runner_api_pb2.Pipeline()
    pipeline.components.environments["env"].CopyFrom(env)
    return pipeline


def _docker(image: str) -> beam_runner_api_pb2.Environment:
    return beam_runner_api_pb2.Environment(
        urn=common_urns.environments.DOCKER.urn,
        payload=beam_runner_api_pb2.DockerPayload(container_image=image).SerializeToString(),
    )


def _prepare(pipeline, tmp_path, worker_pool=None):
    """Prepare with a stand-in cache whose builds only make the interpreter's path."""
    reports = []
    images = ImageEnvironments(tmp_path, lambda target, interpreter, image: None)
    environments.prepare(
        pipeline,
        images=images,
        report=reports.append,
        harnesses=tmp_path / "harnesses",
        worker_pool=worker_pool,
    )
    return reports


def test_the_sdk_image_of_this_beam_and_python_runs_in_process(tmp_path):
    image = f"gcr.io/x/apache/beam_python{THIS_PYTHON}_sdk:{beam.__version__}"
    reports = _prepare(_pipeline_with(_docker(image)), tmp_path)
    assert not any(tmp_path.iterdir()), "nothing is built for it"
    assert image in reports[0] and "no container is started" in reports[0]


def test_the_sdk_image_of_another_beam_runs_as_a_process_of_its_stand_in(tmp_path):
    pipeline = _pipeline_with(_docker(f"apache/beam_python{THIS_PYTHON}_sdk:2.50.0"))
    reports = _prepare(pipeline, tmp_path)
    env = pipeline.components.environments["env"]
    assert env.urn == common_urns.environments.PROCESS.urn
    python = tmp_path / f"python{THIS_PYTHON}-beam2.50.0" / "bin" / "python"
    payload = beam_runner_api_pb2.ProcessPayload.FromString(env.payload)
    assert payload.command == f"{python} -m beamjobs.worker.boot"
    assert [r.split(" ")[0] for r in reports] == ["building", "built", "the"]


def test_an_unknown_environment_is_refused_with_what_to_use(tmp_path):
    pipeline = _pipeline_with(beam_runner_api_pb2.Environment(urn="beam:env:go:v1"))
    with pytest.raises(environments.UnrunnableEnvironment, match="--environment_type=LOOPBACK"):
        _prepare(pipeline, tmp_path)


@pytest.mark.parametrize(
    ("mode", "urn"),
    [
        ("multi_processing", python_urns.SUBPROCESS_SDK),
        ("multi_threading", python_urns.EMBEDDED_PYTHON_GRPC),
        ("in_memory", python_urns.EMBEDDED_PYTHON),
    ],
)
def test_direct_running_modes_choose_how_embedded_code_runs(mode, urn):
    pipeline = _pipeline_with(beam_runner_api_pb2.Environment(urn=python_urns.EMBEDDED_PYTHON))
    options = PipelineOptions.from_dictionary(
        {"direct_running_mode": mode, "direct_num_workers": "3"}
    )
    assert environments.parallelism(pipeline, options) == 3
    assert pipeline.components.environments["env"].urn == urn


def test_one_worker_process_is_the_jobs_own_worker():
    pipeline = _pipeline_with(beam_runner_api_pb2.Environment(urn=python_urns.EMBEDDED_PYTHON))
    options = PipelineOptions.from_dictionary(
        {"direct_running_mode": "multi_processing", "direct_num_workers": "1"}
    )
    assert environments.parallelism(pipeline, options) == 1
    assert pipeline.components.environments["env"].urn == python_urns.EMBEDDED_PYTHON


def test_process_environments_get_beams_standard_boot_flags():
    command = boot_command(
        "python -m beamjobs.worker.boot",
        worker_id="w1",
        control="localhost:1",
        logging_url="localhost:2",
    )
    assert command == [
        "python",
        "-m",
        "beamjobs.worker.boot",
        "--id=w1",
        "--logging_endpoint=localhost:2",
        "--control_endpoint=localhost:1",
        "--artifact_endpoint=localhost:1",
        "--provision_endpoint=localhost:1",
    ]


def test_on_fargate_docker_environments_use_the_sdk_sidecars_worker_pool(tmp_path):
    pipeline = _pipeline_with(_docker("apache/beam_python3.11_sdk:2.50.0"))
    assert _prepare(pipeline, tmp_path, worker_pool="localhost:50000") == []
    env = pipeline.components.environments["env"]
    assert env.urn == common_urns.environments.EXTERNAL.urn
    payload = beam_runner_api_pb2.ExternalPayload.FromString(env.payload)
    assert payload.endpoint.url == "localhost:50000"
