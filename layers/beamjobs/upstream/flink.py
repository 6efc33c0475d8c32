"""Flink's own REST API, for what Beam's Flink job server leaves undone: its Cancel stops only
its own wait for the job, while the job runs on in the Flink cluster. A mirror of a job on an
engine whose Flink REST address the deployment knows (Settings.flink_rest) cancels the Flink job
itself, found by its name: the mirror names every upstream job by the job's id here
(beamjobs.upstream.mirror.upstream_options).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from beamjobs.upstream.client import CALL_SECONDS, UpstreamError

# Flink's job states from which a job moves no more (JobStatus.isGloballyTerminalState).
_ENDED = frozenset({"FINISHED", "CANCELED", "FAILED"})


class FlinkRest:
    """One Flink cluster's REST API (its JobManager's, HOST:PORT)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def cancel(self, name: str) -> int:
        """Cancel every unfinished Flink job of this name; how many were asked to stop."""
        jobs = self._call("GET", "/jobs/overview")["jobs"]
        live = [job["jid"] for job in jobs if job["name"] == name and job["state"] not in _ENDED]
        for jid in live:
            self._call("PATCH", f"/jobs/{jid}?mode=cancel")
        return len(live)

    def _call(self, method: str, path: str) -> dict:
        request = urllib.request.Request(f"http://{self.address}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=CALL_SECONDS) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise UpstreamError("FAILED_PRECONDITION", f"Flink {method} {path}: {error}") from error
        except OSError as error:
            raise UpstreamError("UNAVAILABLE", f"Flink at {self.address}: {error}") from error
        return dict(json.loads(body)) if body.strip() else {}
