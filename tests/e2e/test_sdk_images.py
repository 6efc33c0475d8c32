"""DOCKER environments without a container runtime, and user code that needs what Beam's Python
SDK image has: the worker's environment is that image's."""

import re

import apache_beam as beam
import hamcrest
import pytest
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.runners.runner import PipelineState
from apache_beam.testing.util import assert_that, matches_all

from tests.e2e.conftest import EMBEDDED, ROOT, free_port, options, serve


class UsesTheImagesPackages(beam.DoFn):
    """Imports, inside the worker, packages that the SDK image has and apache-beam alone
    does not bring."""

    def process(self, element):
        import hamcrest
        import numpy
        import pandas
        import pyarrow
        import tenacity

        @tenacity.retry(stop=tenacity.stop_after_attempt(3), reraise=True)
        def frame():
            return pandas.DataFrame({"x": numpy.arange(element)})

        table = pyarrow.Table.from_pandas(frame())
        hamcrest.assert_that(table.num_rows, hamcrest.equal_to(element))
        yield int(table.column("x").to_pandas().sum())


def _messages(job_service, job_id):
    return [
        r.message_response.message_text
        for r in job_service.GetMessageStream(api.JobMessagesRequest(job_id=job_id))
        if r.HasField("message_response")
    ]


@pytest.mark.parametrize("environment", [EMBEDDED, "DOCKER"])
def test_user_code_has_the_sdk_images_packages(endpoint, job_service, environment):
    # Given a pipeline whose DoFn imports PyHamcrest, tenacity, numpy, pandas and pyarrow, and
    # whose assertion holds hamcrest matchers (matches_all imports hamcrest in the worker)
    pipeline = beam.Pipeline(options=options(endpoint, environment))
    sums = pipeline | beam.Create([3, 4]) | beam.ParDo(UsesTheImagesPackages())
    assert_that(sums, matches_all([hamcrest.equal_to(3), hamcrest.greater_than(5)]))
    # When it runs, in process or from the SDK's default image (this worker's Beam)
    result = pipeline.run()
    # Then it is DONE
    assert result.wait_until_finish() == PipelineState.DONE
    if environment == "DOCKER":
        assert any(
            "whose Python environment is that image's" in text
            for text in _messages(job_service, result._job_id)
        )


def _failure_of_docker_job(endpoint, image):
    """The exception text of a job with a DOCKER environment of `image`, which must fail."""
    pipeline = beam.Pipeline(options=options(endpoint, "DOCKER", f"--environment_config={image}"))
    _ = pipeline | beam.Create([1])
    with pytest.raises(RuntimeError) as raised:
        pipeline.run().wait_until_finish()
    return str(raised.value)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        # A Python pipeline naming the image of Beam's Java or Go SDK (whose pipelines do run)
        ("apache/beam_java11_sdk:2.77.0", "has none of the jars the Java SDK stages"),
        ("apache/beam_go_sdk:2.77.0", "has none of the Go worker binary the Go SDK stages"),
        ("apache/beam_typescript_sdk:2.49.0", "the image of Beam's TypeScript SDK"),
        (
            "registry.example.com/data/pipelines:3",
            "not one of Beam's Python SDK images (apache/beam_python3.X_sdk:VERSION)",
        ),
    ],
)
def test_an_image_the_worker_cannot_stand_in_for_fails_with_what_to_do(endpoint, image, expected):
    message = _failure_of_docker_job(endpoint, image)
    assert image in message and expected in message
    assert "--environment_type=LOOPBACK" in message
    if "example.com" in image:  # a custom image may be built FROM an SDK image
        assert "--requirements_file" in message


@pytest.fixture(scope="module")
def isolated_endpoint(tmp_path_factory):
    """A server whose workers find only this machine's system Python on PATH and a package
    index that does not answer, with a cache of its own."""
    tmp = tmp_path_factory.mktemp("isolated")
    port = free_port()
    server = serve(
        tmp,
        "isolated",
        port,
        env={
            "PATH": f"{ROOT / '.venv/bin'}:/usr/bin:/bin",
            "PIP_INDEX_URL": f"http://127.0.0.1:{free_port()}/simple",
            "PIP_EXTRA_INDEX_URL": "",
            "PIP_FIND_LINKS": "",
            "PIP_CONFIG_FILE": "/dev/null",
            "BEAMJOBS_ENVIRONMENT_CACHE": str(tmp / "environments"),
        },
    )
    yield f"localhost:{port}"
    server.stop()


def test_an_sdk_image_of_a_python_this_machine_lacks_fails_naming_it(isolated_endpoint):
    image = "apache/beam_python3.12_sdk:2.77.0"
    message = _failure_of_docker_job(isolated_endpoint, image)
    assert image in message and "this machine has no python3.12" in message
    assert "LOOPBACK" in message


def test_an_sdk_image_whose_packages_the_index_cannot_provide_fails_naming_it(
    isolated_endpoint,
):
    image = "apache/beam_python3.11_sdk:2.51.0"
    message = _failure_of_docker_job(isolated_endpoint, image)
    assert f"building the environment of {image} failed" in message
    assert re.search(r"apache-beam\[gcp,test,dataframe\]==2\.51\.0", message)
    assert "package index" in message and "LOOPBACK" in message
