"""The worker channel of the local executor's workers: Lambda's Invoke API on 127.0.0.1, serving
the worker function's own handler (beamjobs_functions.worker, idempotency included) with the
same JSON events, so that local workers report exactly as on AWS (lambda.invoke through
botocore) and hold no more than there: their job's worker secret, and this address."""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from beamjobs.aws.invoker import Handler
from beamjobs.local.invoker import InProcessInvoker
from beamjobs.worker.channel import WORKER_FUNCTION

logger = logging.getLogger(__name__)
_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")


class LocalWorkerChannel:
    """The channel on a free port of 127.0.0.1, in threads of this process."""

    def __init__(self, worker_function: Handler) -> None:
        """`worker_function`: the worker function's handler, as Lambda would run it."""
        function = InProcessInvoker({WORKER_FUNCTION: worker_function})

        class Invocations(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                match = _INVOKE.match(self.path)
                if match is None or match["name"] != WORKER_FUNCTION:
                    self._answer(404, {"message": f"no function at {self.path}"})
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    answer = function.invoke(WORKER_FUNCTION, json.loads(body or b"null"))
                except Exception as error:  # as Lambda reports a handler's crash
                    logger.exception("the worker channel failed")
                    self._answer(
                        200,
                        {"errorMessage": str(error), "errorType": type(error).__name__},
                        function_error="Unhandled",
                    )
                    return
                self._answer(200, answer)

            def _answer(self, status: int, body: Any, function_error: str = "") -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if function_error:
                    self.send_header("X-Amz-Function-Error", function_error)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Invocations)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(
            target=self._server.serve_forever, name="worker-channel", daemon=True
        ).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
