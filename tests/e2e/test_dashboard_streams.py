"""The dashboard's live streams when the tab that opened them closes: the server notices, and
logs nothing of it."""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.e2e.conftest import free_port, serve
from tests.e2e.test_cli import _prepared

# A few of the live list's refreshes (beamjobs.dashboard.server.LIST_REFRESH_SECONDS, 1 s; not
# imported: its protos and Beam's share names, and this process has Beam's).
REFRESHES_SECONDS = 4.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    process = serve(tmp_path_factory.mktemp("dashboard-streams"), "streams", port)
    yield f"localhost:{port}", process
    process.stop()


def test_a_closed_tab_of_the_live_list_logs_no_traceback(server):
    endpoint, process = server
    dashboard = process.dashboard_url()
    # Given the live job list open, its first page received, then the tab closed
    with urllib.request.urlopen(f"{dashboard}/api/jobs/live", timeout=30) as stream:
        assert stream.readline().startswith(b"event: jobs")
    # When the list changes (a job is prepared), past a few refreshes
    _prepared(endpoint, "after-the-tab-closed")
    time.sleep(REFRESHES_SECONDS)
    # Then the server logged no error of the stream it could no longer write to
    logged = process.log.read_text()
    assert "Error handling request" not in logged, logged[-3000:]
    assert "Cannot write to closing transport" not in logged
