"""A scripted Flink REST API (the JobManager's /jobs/overview and PATCH /jobs/ID?mode=cancel),
served on loopback, for the control-plane tests of beamjobs.upstream.flink. The real Flink
cluster is met in tests/e2e/test_flink.py."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FlinkRestDouble:
    """Jobs by id (name, state); the requests it got, as (method, path)."""

    def __init__(self, jobs: dict[str, tuple[str, str]] | None = None) -> None:
        self.jobs = dict(jobs or {})
        self.requests: list[tuple[str, str]] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                double.requests.append(("GET", self.path))
                if self.path != "/jobs/overview":
                    return self._answer(404, {"errors": ["Not found"]})
                listed = [
                    {"jid": jid, "name": name, "state": state}
                    for jid, (name, state) in double.jobs.items()
                ]
                self._answer(200, {"jobs": listed})

            def do_PATCH(self) -> None:
                double.requests.append(("PATCH", self.path))
                jid = self.path.removeprefix("/jobs/").partition("?")[0]
                if jid not in double.jobs:
                    return self._answer(404, {"errors": ["Job could not be found."]})
                double.jobs[jid] = (double.jobs[jid][0], "CANCELED")
                self._answer(202, None)

            def _answer(self, status: int, body: Any) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"localhost:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
