"""What an image's name tells: whether it is the worker's own SDK image, and where on Docker
Hub it lives (the pull-through cache's path), if it is there at all."""

import pytest

from beamjobs.pipeline.sdk_images import docker_hub_path, same_python_sdk

OWN = "apache/beam_python3.11_sdk:2.77.0"


@pytest.mark.parametrize(
    ("image", "same"),
    [
        (OWN, True),
        ("docker.io/apache/beam_python3.11_sdk:2.77.0", True),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/apache/beam_python3.11_sdk:2.77.0", True),
        ("apache/beam_python3.11_sdk:2.50.0", False),
        ("apache/beam_python3.12_sdk:2.77.0", False),
        ("apache/beam_java11_sdk:2.77.0", False),
        ("example.com/team/python-with-deps:2.77.0", False),
    ],
)
def test_the_workers_own_sdk_image_is_known_under_any_registry(image, same):
    assert same_python_sdk(image, OWN) is same


@pytest.mark.parametrize(
    ("image", "path"),
    [
        ("apache/beam_go_sdk:2.50.0", "apache/beam_go_sdk:2.50.0"),
        ("docker.io/apache/beam_go_sdk:2.50.0", "apache/beam_go_sdk:2.50.0"),
        ("registry-1.docker.io/apache/beam_go_sdk:2.50.0", "apache/beam_go_sdk:2.50.0"),
        ("python:3.11-slim", "library/python:3.11-slim"),
        ("docker.io/python:3.11", "library/python:3.11"),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/beamjobs-sdk:1", None),
        ("gcr.io/apache-beam-testing/beam-sdk:1", None),
        ("localhost/sdk:1", None),
        ("registry.internal:5000/sdk:1", None),
    ],
)
def test_a_docker_hub_image_is_told_from_another_registrys(image, path):
    assert docker_hub_path(image) == path
