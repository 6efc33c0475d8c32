"""The workers' Python environment (.venv-worker) is the Beam SDK image's: the distributions
pinned in worker/requirements.txt at their versions, and beyond them only Beamjobs and what it
needs."""

import json
import re
import subprocess

import apache_beam as beam

from tests.e2e.conftest import ROOT, WORKER_PYTHON

# Run by the workers' interpreter: its distributions, and the closure of Beamjobs' requirements.
_INSPECT = """
import importlib.metadata as metadata, json
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canonical

installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
needed, pending = set(), [("beamjobs", frozenset())]
while pending:
    name, extras = pending.pop()
    if name in needed or name not in installed:
        continue
    needed.add(name)
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": e}) for e in extras | {""}):
            pending.append((canonical(requirement.name), frozenset(requirement.extras)))
print(json.dumps({"installed": installed, "beamjobs_needs": sorted(needed)}))
"""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned() -> dict[str, str]:
    lines = (ROOT / "worker" / "requirements.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {_canonical(name): version for name, version in pins}


def test_the_workers_distributions_are_the_sdk_images_pinned_list():
    # Given the pinned list and what the workers' interpreter has
    pinned = _pinned()
    found = json.loads(
        subprocess.run(
            [WORKER_PYTHON, "-c", _INSPECT], capture_output=True, text=True, check=True
        ).stdout
    )
    installed = found["installed"]
    # Then every pinned distribution is there at its version
    missing = sorted(name for name in pinned if name not in installed)
    different = {
        name: f"pinned {version}, installed {installed[name]}"
        for name, version in pinned.items()
        if name in installed and installed[name] != version
    }
    # And nothing else is, but Beamjobs, what it needs, and the virtualenv's own tools
    allowed = set(pinned) | set(found["beamjobs_needs"]) | {"pip", "setuptools", "wheel"}
    extra = sorted(set(installed) - allowed)
    assert (missing, different, extra) == ([], {}, []), (
        f"the workers' environment differs from the SDK image's: missing {missing}, "
        f"other versions {different}, not in the image {extra}"
    )
    # The image's packages that users' code most often needs are among them
    assert {"pyhamcrest", "tenacity", "numpy", "pandas", "pyarrow", "scikit-learn"} <= set(pinned)


def test_the_tests_submit_with_the_workers_beam_version():
    assert _pinned()["apache-beam"] == beam.__version__
