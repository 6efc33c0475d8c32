import hashlib

from beamjobs.api import pipeline_pb2
from beamjobs.pipeline.artifacts import EMBEDDED, FILE, STAGING_TO, URL, ArtifactLocation
from beamjobs.pipeline.dependencies import (
    declared_sha256,
    display_name,
    reference,
    staged,
    staged_sha256,
    unstaged,
)

LOCATION = ArtifactLocation("artifacts-bucket")
SHA = "ab" * 32


def _file(path, staged_name=None, sha256=""):
    artifact = pipeline_pb2.ArtifactInformation(
        type_urn=FILE,
        type_payload=pipeline_pb2.ArtifactFilePayload(path=path, sha256=sha256).SerializeToString(),
    )
    if staged_name:
        artifact.role_urn = STAGING_TO
        artifact.role_payload = pipeline_pb2.ArtifactStagingToRolePayload(
            staged_name=staged_name
        ).SerializeToString()
    return artifact


def _pipeline(*dependency_lists):
    pipeline = pipeline_pb2.Pipeline(root_transform_ids=["t"])
    for index, dependencies in enumerate(dependency_lists):
        pipeline.components.environments[f"env{index}"].dependencies.extend(dependencies)
    return pipeline


def test_a_staged_reference_keeps_the_role_and_points_at_the_content_address():
    original = _file("/home/me/pkg.tar.gz", "pkg.tar.gz")
    staged = reference(LOCATION, SHA, original)
    payload = pipeline_pb2.ArtifactUrlPayload.FromString(staged.type_payload)
    assert (staged.type_urn, payload.url, payload.sha256) == (
        URL,
        f"s3://artifacts-bucket/artifacts/sha256/{SHA}",
        SHA,
    )
    assert (staged.role_urn, staged.role_payload) == (original.role_urn, original.role_payload)
    assert staged_sha256(LOCATION, staged) == SHA
    assert display_name(staged) == "pkg.tar.gz"


def test_only_references_to_this_bucket_with_a_matching_hash_count_as_staged():
    assert staged_sha256(LOCATION, _file("/tmp/x")) is None
    assert (
        staged_sha256(ArtifactLocation("another-bucket"), reference(LOCATION, SHA, _file("x")))
        is None
    )
    forged = pipeline_pb2.ArtifactInformation(
        type_urn=URL,
        type_payload=pipeline_pb2.ArtifactUrlPayload(
            url=f"s3://artifacts-bucket/artifacts/sha256/{SHA}", sha256="cd" * 32
        ).SerializeToString(),
    )
    assert staged_sha256(LOCATION, forged) is None


def test_unstaged_names_each_dependency_once_across_environments():
    shared = _file("/tmp/req.txt", "requirements.txt")
    staged = reference(LOCATION, SHA, _file("/tmp/done", "pickled_main_session"))
    pipeline = _pipeline([shared, staged], [shared, _file("/tmp/anonymous")])
    mine = {SHA}.__contains__
    assert unstaged(LOCATION, pipeline, mine) == ["requirements.txt", "/tmp/anonymous"]
    assert unstaged(LOCATION, _pipeline([staged]), mine) == []


def test_a_dependency_staged_from_someone_elses_bytes_is_unstaged():
    borrowed = reference(LOCATION, SHA, _file("/tmp/theirs.whl", "theirs.whl"))
    nobody = set().__contains__
    assert unstaged(LOCATION, _pipeline([borrowed]), nobody) == ["theirs.whl"]
    assert staged(LOCATION, _pipeline([borrowed]), nobody) == []


def test_declared_hashes_come_from_the_payload_or_the_embedded_bytes():
    assert declared_sha256(_file("/tmp/x", sha256=SHA)) == SHA
    assert declared_sha256(_file("/tmp/x")) == ""
    embedded = pipeline_pb2.ArtifactInformation(
        type_urn=EMBEDDED,
        type_payload=pipeline_pb2.EmbeddedFilePayload(data=b"inline").SerializeToString(),
    )
    assert declared_sha256(embedded) == hashlib.sha256(b"inline").hexdigest()
