"""Jobs of Beam's Java and Go SDKs on the dashboard, as Python's are: listed, and their graphs
drawn, one node per transform that runs."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot
from tests.browser.test_dashboard import TIMEOUT_MS, _leaf_transforms
from tests.e2e.test_cli import listed
from tests.e2e.test_go_sdk import _command
from tests.e2e.test_java_sdk import run_java


def _java(endpoint: str, name: str, tmp_path) -> None:
    said = run_java(
        endpoint, tmp_path / "counts.txt", "--defaultEnvironmentType=LOOPBACK", f"--jobName={name}"
    )
    assert said["STATE"] == "DONE"


def _go(endpoint: str, name: str, tmp_path) -> None:
    done = subprocess.run(
        _command(endpoint, tmp_path / "counts.txt", name), capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("sdk", [_java, _go], ids=["java", "go"])
def test_the_jobs_of_java_and_go_are_listed_and_their_graphs_drawn(server, page, tmp_path, sdk):
    endpoint, dashboard = server
    name = f"{sdk.__name__[1:]}-{uuid.uuid4().hex[:8]}"
    sdk(endpoint, name, tmp_path)
    [job] = [job for job in listed(endpoint) if job["job_name"] == name]

    page.goto(f"{dashboard}/?name={name}")
    expect(page.locator(f'tr[data-job-id="{job["job_id"]}"] .state')).to_have_text("DONE")
    page.goto(f"{dashboard}/jobs/{job['job_id']}")
    nodes = page.locator("#graph .node")
    expect(nodes.first).to_be_visible(timeout=TIMEOUT_MS)
    screenshot(page, f"job-page-{sdk.__name__[1:]}")
    page.click('#graph .graph-controls button[title="expand every composite"]')
    expect(page.locator("#graph .node.collapsed")).to_have_count(0)
    drawn = nodes.evaluate_all("ns => ns.map(n => n.dataset.transformId)")
    assert sorted(drawn) == sorted(_leaf_transforms(endpoint, job["job_id"]))
