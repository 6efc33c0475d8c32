"""What a DOCKER environment's container image is, read from its name alone (no registry is
consulted): one of Beam's Python SDK images, another language's Beam SDK image, or a custom
image. The worker, and the built-in Prism's mirror, decide from this how to run the environment
without a container runtime."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Beam's published SDK images: apache/beam_python3.11_sdk:2.77.0, apache/beam_java11_sdk:2.50.0,
# apache/beam_go_sdk:2.50.0, apache/beam_typescript_sdk:2.49.0 (under any registry prefix, as
# mirrors keep Beam's repository names).
_BEAM_IMAGE = re.compile(
    r"(?:^|/)apache/beam_(?P<sdk>python(?P<python>\d+\.\d+)|java\d*|go|typescript)_sdk"
    r":(?P<beam>\d+\.\d+\.\d+(?:[.\-]?(?:rc|dev)\d*)?)(?:@sha256:[0-9a-f]{64})?$"
)
_LANGUAGE_NAMES = {"java": "Java", "go": "Go", "typescript": "TypeScript"}


@dataclass(frozen=True)
class PythonSdkImage:
    """One of Beam's Python SDK images: its Python version and its Beam release."""

    image: str
    python: str
    beam: str


@dataclass(frozen=True)
class OtherSdkImage:
    """One of Beam's SDK images for another language."""

    image: str
    language: str
    beam: str


@dataclass(frozen=True)
class CustomImage:
    """Any other image (perhaps built FROM a Beam SDK image: its name cannot tell)."""

    image: str


SdkImage = PythonSdkImage | OtherSdkImage | CustomImage


def classify(image: str) -> SdkImage:
    match = _BEAM_IMAGE.search(image.strip())
    if match is None:
        return CustomImage(image)
    if match["python"]:
        return PythonSdkImage(image, python=match["python"], beam=match["beam"])
    sdk = re.sub(r"\d+$", "", match["sdk"])
    return OtherSdkImage(image, language=_LANGUAGE_NAMES[sdk], beam=match["beam"])


def same_python_sdk(image: str, other: str) -> bool:
    """Whether both are Beam's Python SDK image of one Beam release and Python version (under
    any registry: mirrors keep Beam's names)."""
    one, two = classify(image), classify(other)
    return (
        isinstance(one, PythonSdkImage)
        and isinstance(two, PythonSdkImage)
        and (one.python, one.beam) == (two.python, two.beam)
    )


def docker_hub_path(image: str) -> str | None:
    """The image's repository path on Docker Hub (`apache/beam_go_sdk:2.50.0`, and an official
    image as `library/ubuntu:24.04`); None for an image of another registry (its first part
    names a host: it has a dot or a port, or is localhost)."""
    first, _, rest = image.partition("/")
    if rest and first in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        image = rest
    elif rest and ("." in first or ":" in first or first == "localhost"):
        return None
    return image if "/" in image else f"library/{image}"
