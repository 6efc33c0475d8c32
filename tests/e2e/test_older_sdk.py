"""The oldest Beam Python SDK that installs on this Python (2.50 on 3.11), in a virtualenv of
its own, submits to Beamjobs: with LOOPBACK, and with its default DOCKER environment (its own
SDK image, run locally from a stand-in of that image, so its user code runs under Beam 2.50)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.portability.api import beam_job_api_pb2 as api

from beamjobs.pipeline.sdk_images import PythonSdkImage
from beamjobs.worker.image_environments import image_pins
from tests.e2e.conftest import ROOT

OLD_BEAM = "2.50.0"
CLIENT = Path(__file__).parent / "clients" / "wordcount.py"
EXPECTED_LINES = ["the: 3", "cat: 2", "sat: 2", "mat: 1", "dog: 1", "ran: 1"]


@pytest.fixture(scope="session")
def old_sdk_python() -> str:
    """The interpreter of a virtualenv with apache-beam 2.50.0, built once per clone (a marker
    written last tells a complete one), resolved as its image's stand-in is."""
    venv = ROOT / ".cache" / "sdks" / f"python-apache-beam-{OLD_BEAM}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        image = PythonSdkImage(f"apache/beam_python3.11_sdk:{OLD_BEAM}", "3.11", OLD_BEAM)
        pins = ["--constraint", str(image_pins(image))]
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *pins, f"apache-beam=={OLD_BEAM}"],
            check=True,
        )
        (venv / ".complete").write_text("")
    return str(python)


@pytest.mark.timeout(1500)  # the first DOCKER job builds the 2.50 image's stand-in
@pytest.mark.parametrize("environment", ["LOOPBACK", None])
def test_python_sdk_2_50_runs_a_wordcount(
    endpoint, job_service, old_sdk_python, tmp_path, environment
):
    # Given Beam 2.50's client, with LOOPBACK or its default environment (DOCKER, its image)
    flags = ["--runner=PortableRunner", f"--job_endpoint={endpoint}", "--save_main_session"]
    if environment:
        flags.append(f"--environment_type={environment}")
    output = tmp_path / "counts.txt"
    # When it runs a word count with a side input and a counter
    done = subprocess.run(
        [old_sdk_python, str(CLIENT), str(output), *flags],
        capture_output=True,
        text=True,
        timeout=1400,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Then it is DONE, with the right counts and counter, and its DoFns ran under Beam 2.50
    assert result["state"] == "DONE"
    assert result["words"] == [10]
    assert sorted(output.read_text().splitlines()) == sorted(
        [*EXPECTED_LINES, f"harness beam {OLD_BEAM}"]
    )
    if environment is None:
        texts = [
            r.message_response.message_text
            for r in job_service.GetMessageStream(api.JobMessagesRequest(job_id=result["job_id"]))
            if r.HasField("message_response")
        ]
        image = f"apache/beam_python3.11_sdk:{OLD_BEAM}"
        assert any(image in t and f"Beam {OLD_BEAM}" in t for t in texts), texts
