"""Beam's Go SDK submits to Beamjobs as its users do (`--runner=universal --endpoint=…`): the word
count in tests/e2e/go (a counter, a log line and a Count; `make test` builds it from the Go module
proxy), run to DONE, cancelled and failed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, free_port, serve
from tests.e2e.test_cli import beamjobs, listed
from tests.e2e.test_upstream_engines import _logged

WORDCOUNT = ROOT / ".cache" / "engines" / "bin" / "go-wordcount"
GO_CLIENT = ROOT / "tests" / "e2e" / "go"
EXPECTED = {"cat": 2, "sat": 2, "ran": 1, "dog": 1, "down": 1}
# The failing DoFn's own words (main.go's Failure).
FAILURE = "this DoFn fails on purpose"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> str:
    port = free_port()
    server = serve(tmp_path_factory.mktemp("go"), "go", port)
    yield f"localhost:{port}"
    server.stop()


def _command(endpoint: str, output: Path, name: str, *flags: str) -> list[str]:
    return [
        str(WORDCOUNT),
        "--runner=universal",
        f"--endpoint={endpoint}",
        "--environment_type=LOOPBACK",
        f"--job_name={name}",
        f"--output={output}",
        *flags,
    ]


def _said(stdout: str) -> dict[str, str]:
    """What the Go program printed last: the job's id and counter, or the error's text."""
    said: dict[str, str] = {}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("JOB", "COUNTER", "ERROR"):
            said[word] = rest
    return said


def _job(endpoint: str, name: str) -> dict:
    [job] = [job for job in listed(endpoint) if job["job_name"] == name]
    return job


def test_a_go_word_count_in_loopback_is_done_counted_and_logged(endpoint, tmp_path):
    output, name = tmp_path / "counts.txt", f"go-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        _command(endpoint, output, name), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said = _said(done.stdout)
    # Then it is DONE with the right counts, and its counter comes back through the Go SDK
    job = _job(endpoint, name)
    assert said["JOB"] == job["job_id"] and job["state"] == "DONE"
    lines = output.read_text().splitlines()
    assert {word: int(n) for word, n in (line.split(": ") for line in lines)} == EXPECTED
    assert said["COUNTER"] == "words=7"
    # ... its log line is among the job's messages, once each: the Go SDK's own echo of the job's
    # messages (its logger is the harness's in LOOPBACK) does not come back as messages
    logged = _logged(endpoint, job["job_id"])
    assert sum("splitting a line of" in text for text in logged) == 3, logged
    assert not any(text.startswith("(time=") for text in logged)


def test_the_go_sdks_default_docker_environment_runs_without_docker(endpoint, tmp_path):
    # Given the word count in the Go SDK's default environment, DOCKER apache/beam_go_sdk, run
    # from its module as Go users do (the SDK cross-compiles the program into the worker binary
    # it stages, with the module cache `make` filled)
    output, name = tmp_path / "counts.txt", f"go-{uuid.uuid4().hex[:8]}"
    command = [arg for arg in _command(endpoint, output, name) if "environment_type" not in arg]
    go = shutil.which("go") or "/usr/local/go/bin/go"
    env = {
        **os.environ,
        "PATH": f"{Path(go).parent}{os.pathsep}{os.environ['PATH']}",
        "GOMODCACHE": str(ROOT / ".cache" / "engines" / "gomod"),
        "GOFLAGS": "-modcacherw",
    }
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=GO_CLIENT, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Then the staged binary ran as the image's boot runs it: DONE, counted, and said so
    assert "ERROR" not in _said(done.stdout), done.stdout[-3000:]
    job = _job(endpoint, name)
    assert job["state"] == "DONE" and _said(done.stdout)["COUNTER"] == "words=7"
    lines = output.read_text().splitlines()
    assert {word: int(n) for word, n in (line.split(": ") for line in lines)} == EXPECTED
    logged = _logged(endpoint, job["job_id"])
    assert any("apache/beam_go_sdk:2.77.0) runs the pipeline's own Go" in t for t in logged)


def _counted(endpoint: str, job_id: str) -> int:
    metrics = json.loads(beamjobs(endpoint, "metrics", job_id).stdout)
    return max((m["attempted"] or 0 for m in metrics if m["name"] == "words"), default=0)


def test_a_slow_go_job_counts_while_running_and_its_cancel_gives_cancelled(endpoint, tmp_path):
    # Given a Go job that counts in one bundle until cancelled (the Go SDK has no cancel of its
    # own)
    name = f"go-{uuid.uuid4().hex[:8]}"
    submitter = subprocess.Popen(
        _command(endpoint, tmp_path / "counts.txt", name, "--mode=slow"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(
            job["job_name"] == name and job["state"] == "RUNNING" for job in listed(endpoint)
        ):
            assert time.monotonic() < deadline, "the Go job never ran"
            time.sleep(0.5)
        # Then its counter rises while its one bundle runs (the Go harness's progress reports)
        job_id = _job(endpoint, name)["job_id"]
        readings = [0]
        while len(set(readings)) < 3:
            assert time.monotonic() < deadline, readings
            time.sleep(0.5)
            readings.append(_counted(endpoint, job_id))
        assert readings == sorted(readings), readings
        # When it is cancelled with Beamjobs' own command
        cancelled = beamjobs(endpoint, "cancel", job_id)
        assert cancelled.returncode == 0, cancelled.stderr
        # Then it ends CANCELLED, and the Go program, which was waiting on it, returns
        stdout, stderr = submitter.communicate(timeout=120)
    finally:
        submitter.kill()
    assert submitter.returncode == 0, stderr[-3000:]
    assert _said(stdout)["JOB"] == job_id
    assert _job(endpoint, name)["state"] == "CANCELLED"
    # ... and keeps the count it had reached
    assert _counted(endpoint, job_id) >= readings[-1]


def test_a_failing_go_dofn_fails_the_job_with_its_error_in_the_go_error(endpoint, tmp_path):
    name = f"go-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        _command(endpoint, tmp_path / "counts.txt", name, "--mode=fail"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    error = _said(done.stdout)["ERROR"]
    assert error.startswith(f"job {_job(endpoint, name)['job_id']} failed:")
    assert FAILURE in error
    assert _job(endpoint, name)["state"] == "FAILED"
