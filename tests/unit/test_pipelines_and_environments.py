import pytest

from beamjobs.api import pipeline_pb2
from beamjobs.domain.errors import InvalidArgument
from beamjobs.pipeline.artifacts import ArtifactLocation
from beamjobs.pipeline.environments import EMBEDDED, EXTERNAL, unsupported_environments_message
from beamjobs.pipeline.summary import summarize
from beamjobs.pipeline.validation import parse_pipeline

LOCATION = ArtifactLocation("bucket")


def _pipeline(bounded=True, urns=(EMBEDDED,)):
    pipeline = pipeline_pb2.Pipeline(root_transform_ids=["read"])
    pipeline.components.transforms["read"].spec.urn = "beam:transform:impulse:v1"
    pipeline.components.pcollections["pc"].is_bounded = (
        pipeline_pb2.IsBounded.BOUNDED if bounded else pipeline_pb2.IsBounded.UNBOUNDED
    )
    for index, urn in enumerate(urns):
        pipeline.components.environments[f"env{index}"].urn = urn
    return pipeline


def test_a_batch_pipeline_is_bounded_and_lists_its_environments():
    summary = summarize(_pipeline(urns=(EXTERNAL, EMBEDDED)), LOCATION, held=lambda sha: True)
    assert summary.bounded
    assert summary.environment_urns == (EMBEDDED, EXTERNAL)


def test_one_unbounded_collection_makes_a_streaming_pipeline():
    assert not summarize(_pipeline(bounded=False), LOCATION, held=lambda sha: True).bounded


@pytest.mark.parametrize(
    "garbage", [b"", b"\xff\xff\xff", pipeline_pb2.Pipeline().SerializeToString()]
)
def test_what_is_not_a_runnable_pipeline_is_an_invalid_argument(garbage):
    with pytest.raises(InvalidArgument):
        parse_pipeline(garbage)


def test_supported_environments_pass_and_others_are_named_with_a_remedy():
    assert unsupported_environments_message({EMBEDDED, EXTERNAL}) is None
    message = unsupported_environments_message({"beam:env:docker:v1", EMBEDDED})
    assert "beam:env:docker:v1" in message
    assert "--environment_type=LOOPBACK" in message
