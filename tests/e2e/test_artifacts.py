"""Pipelines that bring code: --extra_package, --requirements_file and --save_main_session,
submitted by the real Beam SDK from a script of its own (so `__main__` is the user's, and the
staged package is importable only where Beamjobs installed it)."""

import hashlib
import os
import subprocess
import sys
import textwrap
import time

import boto3
import grpc
import pytest
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.portability.api import beam_job_api_pb2_grpc, beam_runner_api_pb2

from tests.e2e.conftest import Process, free_port, serve
from tests.e2e.user_scripts import SCRIPT, command, submit

BUCKET = "beamjobs-artifacts"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server on an embedded AWS of its own, so the tests can look into its bucket:
    (job endpoint, S3 client)."""
    tmp = tmp_path_factory.mktemp("artifacts-server")
    aws_port, port = free_port(), free_port()
    aws = Process(["aws", "--port", str(aws_port), "--template", "template.yaml"], tmp / "aws.log")
    aws.wait_for_port(aws_port)
    url = f"http://127.0.0.1:{aws_port}"
    try:
        server = serve(tmp, "server", port, "--aws-endpoint", url)
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        yield f"localhost:{port}", s3
        server.stop()
    finally:
        aws.stop()


@pytest.fixture
def endpoint(served):
    return served[0]


@pytest.fixture
def job_service(endpoint):
    with grpc.insecure_channel(endpoint) as channel:
        yield beam_job_api_pb2_grpc.JobServiceStub(channel)


def _stored_artifacts(s3):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="artifacts/")
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


# With --save_main_session: a module-level function, and a coder registered at module level,
# which only a worker that loaded the pickled main session knows.
MAIN_SESSION_SCRIPT = textwrap.dedent(
    """
    import sys

    import apache_beam as beam
    from apache_beam.coders import registry
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to


    class Point:
        pass


    class PointCoder(beam.coders.Coder):
        def encode(self, value):
            return b""

        def decode(self, encoded):
            return Point()

        def is_deterministic(self):
            return True


    registry.register_coder(Point, PointCoder)


    def coder_seen_by_the_worker(word):
        # Imported here, so that this is the worker's registry, not a copy pickled with us.
        from apache_beam.coders import typecoders

        return f"{word}:{type(typecoders.registry.get_coder(Point)).__name__}"


    if __name__ == "__main__":
        pipeline = beam.Pipeline(options=PipelineOptions(sys.argv[1:]))
        seen = pipeline | beam.Create(["x"]) | beam.Map(coder_seen_by_the_worker)
        assert_that(seen, equal_to(["x:PointCoder"]))
        result = pipeline.run()
        print("JOB", result._job_id, flush=True)
        print("STATE", result.wait_until_finish(), flush=True)
    """
)


def _staged_names(job_service, job_id):
    pipeline = job_service.GetPipeline(api.GetJobPipelineRequest(job_id=job_id)).pipeline
    names = set()
    for env in pipeline.components.environments.values():
        for artifact in env.dependencies:
            assert artifact.type_urn == "beam:artifact:type:url:v1"
            url = beam_runner_api_pb2.ArtifactUrlPayload.FromString(artifact.type_payload).url
            assert url.startswith("s3://") and "/artifacts/sha256/" in url
            names.add(
                beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                    artifact.role_payload
                ).staged_name
            )
    return names


def _messages(job_service, job_id):
    return [
        r.message_response.message_text
        for r in job_service.GetMessageStream(api.JobMessagesRequest(job_id=job_id))
        if r.HasField("message_response")
    ]


@pytest.mark.parametrize(
    "environment",
    [
        # No environment given: the SDK's default DOCKER image, run in the worker's Python.
        (),
        (
            "--environment_type=PROCESS",
            f'--environment_config={{"command": "{sys.executable} -m beamjobs.worker.boot"}}',
        ),
    ],
    ids=["default", "process"],
)
def test_an_extra_package_is_installed_for_the_pipeline(
    tmp_path, endpoint, job_service, sdist, environment
):
    job_id = submit(tmp_path, SCRIPT, endpoint, f"--extra_package={sdist}", *environment)
    assert sdist.name in _staged_names(job_service, job_id)


def test_a_requirements_file_naming_a_local_package_installs_it(
    tmp_path, endpoint, job_service, sdist
):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{sdist}\n")
    job_id = submit(tmp_path, SCRIPT, endpoint, f"--requirements_file={requirements}")
    assert sdist.name in _staged_names(job_service, job_id)
    assert any("set up in the worker" in text for text in _messages(job_service, job_id))


def test_a_setup_file_package_is_built_staged_and_installed(tmp_path, endpoint, job_service):
    project = tmp_path / "project"
    (project / "beamjobs_e2e_setuppkg").mkdir(parents=True)
    (project / "beamjobs_e2e_setuppkg" / "__init__.py").write_text(
        "def shout(word):\n    return word.upper() + '!'\n"
    )
    (project / "setup.py").write_text(
        "import setuptools\n"
        "setuptools.setup(name='beamjobs-e2e-setuppkg', version='0.1', "
        "packages=['beamjobs_e2e_setuppkg'])\n"
    )
    script = SCRIPT.replace("beamjobs_e2e_tinypkg", "beamjobs_e2e_setuppkg")
    job_id = submit(tmp_path, script, endpoint, f"--setup_file={project / 'setup.py'}")
    assert "workflow.tar.gz" in _staged_names(job_service, job_id)


def test_the_main_session_reaches_the_worker(tmp_path, endpoint, job_service):
    job_id = submit(tmp_path, MAIN_SESSION_SCRIPT, endpoint, "--save_main_session")
    assert "pickled_main_session" in _staged_names(job_service, job_id)


def test_a_second_job_with_the_same_artifacts_stores_nothing_new(tmp_path, endpoint, served, sdist):
    s3 = served[1]
    submit(tmp_path, SCRIPT, endpoint, f"--extra_package={sdist}")
    first = _stored_artifacts(s3)
    assert first, "the first job staged nothing"
    submit(tmp_path, SCRIPT, endpoint, f"--extra_package={sdist}")
    assert _stored_artifacts(s3) == first


def test_a_client_killed_mid_staging_leaves_a_preparation_that_run_refuses(
    tmp_path, endpoint, served, job_service
):
    s3 = served[1]
    big = tmp_path / "big_package-0.1.tar.gz"
    data = os.urandom(150 * 1024 * 1024)
    big.write_bytes(data)
    client = subprocess.Popen(
        command(
            tmp_path, SCRIPT, endpoint, f"--extra_package={big}", "--job_name=killed-mid-staging"
        ),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        # Killed once the big artifact's upload is under way.
        while not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads"):
            assert client.poll() is None and time.monotonic() < deadline, "staging never began"
            time.sleep(0.05)
    finally:
        client.kill()
        client.wait()
    [job] = [
        info
        for info in job_service.GetJobs(api.GetJobsRequest()).job_info
        if info.job_name == "killed-mid-staging"
    ]
    assert job.state == api.JobState.STOPPED
    with pytest.raises(grpc.RpcError) as refused:
        job_service.Run(api.RunJobRequest(preparation_id=job.job_id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert big.name in refused.value.details()
    # Nothing half-written is visible, and the abandoned upload is cleaned up.
    assert f"artifacts/sha256/{hashlib.sha256(data).hexdigest()}" not in _stored_artifacts(s3)
    deadline = time.monotonic() + 30
    while s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads"):
        assert time.monotonic() < deadline, "the abandoned upload was left behind"
        time.sleep(0.1)
    assert not [key for key in _stored_artifacts(s3) if key.startswith("artifacts/incoming/")]
