"""Stand-ins for SDK images: what an image name says, and the cache's rules (one build at a
time, never a partial one), with a scripted build (no pip, no sockets)."""

import re
import threading
import time
from pathlib import Path

import pytest

from beamjobs.pipeline.sdk_images import CustomImage, OtherSdkImage, PythonSdkImage, classify
from beamjobs.worker.image_environments import (
    THIS_PYTHON,
    ImageEnvironments,
    UnrunnableEnvironment,
    image_pins,
    image_requirements,
)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (
            "apache/beam_python3.11_sdk:2.50.0",
            PythonSdkImage("apache/beam_python3.11_sdk:2.50.0", python="3.11", beam="2.50.0"),
        ),
        (
            "gcr.io/mirror/apache/beam_python3.9_sdk:2.60.0rc1",
            PythonSdkImage(
                "gcr.io/mirror/apache/beam_python3.9_sdk:2.60.0rc1", python="3.9", beam="2.60.0rc1"
            ),
        ),
        (
            "apache/beam_java17_sdk:2.77.0",
            OtherSdkImage("apache/beam_java17_sdk:2.77.0", language="Java", beam="2.77.0"),
        ),
        (
            "apache/beam_go_sdk:2.77.0",
            OtherSdkImage("apache/beam_go_sdk:2.77.0", language="Go", beam="2.77.0"),
        ),
        (
            "apache/beam_typescript_sdk:2.49.0",
            OtherSdkImage(
                "apache/beam_typescript_sdk:2.49.0", language="TypeScript", beam="2.49.0"
            ),
        ),
        ("apache/beam_python3.11_sdk:latest", CustomImage("apache/beam_python3.11_sdk:latest")),
        ("me/beam_python3.11_sdk:2.50.0", CustomImage("me/beam_python3.11_sdk:2.50.0")),
        ("python:3.11", CustomImage("python:3.11")),
    ],
)
def test_an_image_name_says_which_sdk_it_is(image, expected):
    assert classify(image) == expected


def test_an_images_requirements_are_beam_with_the_images_extras_and_manual_list():
    requirements = image_requirements("2.50.0")
    assert requirements[0] == "apache-beam[gcp,test,dataframe]==2.50.0"
    assert {"scikit-learn", "scipy", "nltk"} <= set(requirements)


IMAGE = PythonSdkImage(f"apache/beam_python{THIS_PYTHON}_sdk:2.50.0", THIS_PYTHON, "2.50.0")


def test_a_pinned_stand_in_pins_its_release_and_every_package_its_image_requires():
    pins = image_pins(PythonSdkImage("apache/beam_python3.11_sdk:2.50.0", "3.11", "2.50.0"))
    assert pins is not None
    pinned = dict(
        line.split("==") for line in pins.read_text().splitlines() if not line.startswith("#")
    )
    pinned = {_distribution(name): version for name, version in pinned.items()}
    assert pinned["apache-beam"] == "2.50.0"
    required = [_distribution(re.split(r"[\[<>=]", r)[0]) for r in image_requirements("2.50.0")]
    assert [name for name in required if name not in pinned] == []


def _distribution(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_an_unpinned_release_is_resolved_afresh():
    assert image_pins(PythonSdkImage("apache/beam_python3.11_sdk:2.49.0", "3.11", "2.49.0")) is None


class ScriptedBuild:
    """Counts builds; each takes `seconds`, leaves a file behind, and fails when told to."""

    def __init__(self, seconds: float = 0.0, fail: bool = False) -> None:
        self.seconds, self.fail, self.calls = seconds, fail, 0

    def __call__(self, target, interpreter, image):
        self.calls += 1
        assert not any(target.iterdir()), "a build starts from an empty directory"
        (target / "half-built").write_text("")
        time.sleep(self.seconds)
        if self.fail:
            raise UnrunnableEnvironment(f"building the environment of {image.image} failed")


def test_the_first_use_builds_and_reports_later_uses_reuse(tmp_path):
    build, reports = ScriptedBuild(), []
    images = ImageEnvironments(tmp_path, build)
    first = images.python_for(IMAGE, reports.append)
    assert first == tmp_path / f"python{THIS_PYTHON}-beam2.50.0" / "bin" / "python"
    assert [r.split(" ")[0] for r in reports] == ["building", "built"]
    assert IMAGE.image in reports[0]
    reports.clear()
    assert images.python_for(IMAGE, reports.append) == first
    assert (build.calls, reports) == (1, [])


def test_concurrent_jobs_wait_for_one_build(tmp_path):
    # Given a slow build and two jobs (each with a cache object of its own, as two workers)
    build = ScriptedBuild(seconds=0.5)
    reports: list[list[str]] = [[], []]
    paths = [None, None]

    def job(i):
        paths[i] = ImageEnvironments(tmp_path, build).python_for(IMAGE, reports[i].append)

    threads = [threading.Thread(target=job, args=(i,)) for i in (0, 1)]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for thread in threads:
        thread.join()
    # Then one build served both, and the second job said it was waiting for it
    assert build.calls == 1 and paths[0] == paths[1]
    assert reports[1][0].startswith("waiting for another job's build")


def test_a_failed_build_is_never_used_and_the_next_use_builds_again(tmp_path):
    with pytest.raises(UnrunnableEnvironment, match="failed"):
        ImageEnvironments(tmp_path, ScriptedBuild(fail=True)).python_for(IMAGE, lambda _: None)
    rebuild = ScriptedBuild()
    ImageEnvironments(tmp_path, rebuild).python_for(IMAGE, lambda _: None)
    assert rebuild.calls == 1


def test_a_build_killed_midway_is_removed_and_made_again(tmp_path):
    # Given what a killed build leaves: the directory, without its completion marker
    partial = tmp_path / f"python{THIS_PYTHON}-beam2.50.0"
    (partial / "bin").mkdir(parents=True)
    (partial / "bin" / "python").write_text("")
    build = ScriptedBuild()
    ImageEnvironments(tmp_path, build).python_for(IMAGE, lambda _: None)
    assert build.calls == 1 and not (partial / "bin").exists()


def test_a_cache_named_relatively_builds_where_it_says_by_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    python = ImageEnvironments(Path("cache"), ScriptedBuild()).python_for(IMAGE, lambda _: None)
    assert python.is_absolute() and python.is_relative_to(tmp_path / "cache")


def test_an_image_of_a_python_this_machine_lacks_is_refused_before_building(tmp_path):
    build = ScriptedBuild()
    image = PythonSdkImage("apache/beam_python3.4_sdk:2.50.0", "3.4", "2.50.0")
    with pytest.raises(UnrunnableEnvironment, match="this machine has no python3.4"):
        ImageEnvironments(tmp_path, build).python_for(image, lambda _: None)
    assert build.calls == 0
