"""Beam's Java SDK submits to Beamjobs as its users do (`--runner=PortableRunner
--jobEndpoint=…`): the word count in tests/e2e/java (a side input, a GroupByKey, a counter and a
log line; `make test` builds it with Maven), run to DONE, cancelled and failed, each told to
the Java program in the Java SDK's own way."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, free_port, serve
from tests.e2e.test_cli import beamjobs, listed
from tests.e2e.test_upstream_engines import _logged

JAVA_CLIENT = ROOT / "tests" / "e2e" / "java"
CLASSPATH = f"{JAVA_CLIENT / 'target' / 'classes'}:{JAVA_CLIENT / 'target' / 'dependency' / '*'}"
EXPECTED = {"cat": 2, "sat": 2, "ran": 1, "dog": 1, "down": 1}
# The failing DoFn's own words (WordCount.FAILURE).
FAILURE = "this DoFn throws on purpose"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> str:
    port = free_port()
    server = serve(tmp_path_factory.mktemp("java"), "java", port)
    yield f"localhost:{port}"
    server.stop()


def run_java(endpoint: str, output: Path, *flags: str) -> dict[str, str]:
    """Run the Java word count to its end; what it printed last: the job's final STATE, its
    counter, and the exception's text (ERROR)."""
    done = subprocess.run(
        [
            "java",
            "-cp",
            CLASSPATH,
            "beamjobs.e2e.WordCount",
            "--runner=PortableRunner",
            f"--jobEndpoint={endpoint}",
            f"--output={output}",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said: dict[str, str] = {}
    for line in done.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("STATE", "COUNTER"):
            said[word] = rest
    if "ERROR " in done.stdout:
        said["ERROR"] = done.stdout.split("ERROR ", 1)[1]
    return said


def _counts(output: Path) -> dict[str, int]:
    lines = output.read_text().splitlines()
    return {word: int(count) for word, count in (line.split(": ") for line in lines)}


def test_a_java_word_count_in_loopback_is_done_counted_and_logged(endpoint, tmp_path):
    # Given the Java word count, its harness in the submitting JVM (LOOPBACK)
    output = tmp_path / "counts.txt"
    # When it runs, then it is DONE with the right counts
    name = f"java-{uuid.uuid4().hex[:8]}"
    said = run_java(endpoint, output, "--defaultEnvironmentType=LOOPBACK", f"--jobName={name}")
    assert said["STATE"] == "DONE"
    assert _counts(output) == EXPECTED
    # ... its counter comes back once through PipelineResult.metrics(), at the step that counts
    assert said["COUNTER"] == "words=7 Split/ParMultiDo(SplitWords)"
    # ... its log line is among the job's messages, and the job is listed
    listed = beamjobs(endpoint, "list")
    assert listed.returncode == 0, listed.stderr
    [job] = [job for job in json.loads(listed.stdout) if job["job_name"] == name]
    assert job["state"] == "DONE"
    logged = _logged(endpoint, job["job_id"])
    assert any("splitting a line of 11 characters" in text for text in logged), logged
    # ... and its steps' wall times are kept (the Java harness reports them in parts)
    metrics = json.loads(beamjobs(endpoint, "metrics", job["job_id"]).stdout)
    walls = {m["step"] for m in metrics if m["kind"] == "wall_time_ms"}
    assert "Split/ParMultiDo(SplitWords)" in walls, walls


def test_the_java_sdks_default_docker_environment_runs_without_docker(endpoint, tmp_path):
    # Given the Java word count in the Java SDK's default environment, DOCKER
    # apache/beam_java17_sdk:2.65.0 (its stand-in built ahead by `make stand-ins`)
    output, name = tmp_path / "counts.txt", f"java-{uuid.uuid4().hex[:8]}"
    # When it runs, then Beam's Java SDK harness ran the pipeline's jars: DONE and counted
    said = run_java(endpoint, output, f"--jobName={name}")
    assert said["STATE"] == "DONE"
    assert _counts(output) == EXPECTED
    assert said["COUNTER"] == "words=7 Split/ParMultiDo(SplitWords)"
    # ... and the job said how, and carries the harness's log line
    [job] = [job for job in listed(endpoint) if job["job_name"] == name]
    logged = _logged(endpoint, job["job_id"])
    assert any("apache/beam_java17_sdk:2.65.0) runs Beam's Java SDK harness" in t for t in logged)
    assert any("splitting a line of 11 characters" in text for text in logged), logged


def test_cancel_of_a_slow_java_job_gives_cancelled(endpoint, tmp_path):
    said = run_java(
        endpoint, tmp_path / "counts.txt", "--defaultEnvironmentType=LOOPBACK", "--mode=slow"
    )
    assert said["STATE"] == "CANCELLED"


def test_a_throwing_java_dofn_fails_the_job_with_its_message_in_the_java_exception(
    endpoint, tmp_path
):
    said = run_java(
        endpoint, tmp_path / "counts.txt", "--defaultEnvironmentType=LOOPBACK", "--mode=fail"
    )
    assert said["STATE"] == "FAILED"
    assert said["ERROR"].startswith("java.lang.RuntimeException: ")
    assert f"java.lang.IllegalStateException: {FAILURE}" in said["ERROR"]
