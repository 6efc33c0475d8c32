"""Browser tests: the dashboard of a `beamjobs serve` in Debian's Chromium, driven by Playwright
(the PyPI wheel, with the machine's browser: never a downloaded one). Screenshots go to
BEAMJOBS_SCREENSHOTS (default build/screenshots)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.processes import ROOT, free_port, serve

CHROMIUM = os.environ.get("BEAMJOBS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(os.environ.get("BEAMJOBS_SCREENSHOTS") or ROOT / "build" / "screenshots")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`beamjobs serve` as `make run` starts it: its Job API endpoint and dashboard URL."""
    port = free_port()
    process = serve(tmp_path_factory.mktemp("browser"), "server", port)
    try:
        yield f"localhost:{port}", process.dashboard_url()
    finally:
        process.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    yield context.new_page()
    context.close()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path
