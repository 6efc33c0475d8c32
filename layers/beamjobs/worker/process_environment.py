"""`beam:env:process:v1` for FnApiRunner, which has no handler of its own for it: launch the
environment's command with Beam's standard boot flags, as Flink's and Spark's runners do."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from typing import Any

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_fn_api_pb2, beam_runner_api_pb2
from apache_beam.runners.portability.fn_api_runner.worker_handlers import (
    GrpcWorkerHandler,
    WorkerHandler,
)

logger = logging.getLogger(__name__)

# A worker that has not connected back after this long is not coming.
_STOP_TIMEOUT_SECONDS = 10
_ABORT_INTERVAL_SECONDS = 0.2


def boot_command(command: str, *, worker_id: str, control: str, logging_url: str) -> list[str]:
    """The command line of an SDK harness: the environment's command (split like a shell
    would, so `python -m module` works) and the flags every Beam boot program takes."""
    return [
        *shlex.split(command),
        f"--id={worker_id}",
        f"--logging_endpoint={logging_url}",
        f"--control_endpoint={control}",
        f"--artifact_endpoint={control}",
        f"--provision_endpoint={control}",
    ]


@WorkerHandler.register_environment(
    common_urns.environments.PROCESS.urn, beam_runner_api_pb2.ProcessPayload
)
class ProcessWorkerHandler(GrpcWorkerHandler):  # type: ignore[misc]
    def __init__(
        self,
        payload: beam_runner_api_pb2.ProcessPayload,
        state: Any,
        provision_info: Any,
        grpc_server: Any,
    ) -> None:
        super().__init__(state, provision_info, grpc_server)
        self._payload = payload
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()

    def start_worker(self) -> None:
        if not self._payload.command:
            raise ValueError("the PROCESS environment has no command (--environment_config)")
        command = boot_command(
            self._payload.command,
            worker_id=self.worker_id,
            control=self.control_address,
            logging_url=self.logging_api_service_descriptor().url,
        )
        logger.info("starting SDK harness: %s", shlex.join(command))
        # The harness's temporary files (its boot's directory among them) are in a directory of
        # its own, removed once it exits however it ended, as a container's would be.
        temporary = tempfile.mkdtemp(prefix="beam-harness-")
        env = {**os.environ, "TMPDIR": temporary, **self._payload.env}
        # The harness stays in the worker's process group: stopping the job stops it too.
        self._process = subprocess.Popen(command, env=env)
        threading.Thread(
            target=self._watch, args=(self._process, command, temporary), daemon=True
        ).start()

    def _watch(self, process: subprocess.Popen[bytes], command: list[str], temporary: str) -> None:
        """A harness that exits before the job is done fails the job (instead of leaving the
        runner waiting for it forever)."""
        code = process.wait()
        shutil.rmtree(temporary, ignore_errors=True)
        failure = (
            f"the SDK harness of the PROCESS environment exited with code {code}: "
            f"{shlex.join(command)}"
        )
        # Answer what the runner asked of the harness with its failure, as a failing harness
        # would. (ControlConnection.abort() wakes the runner's waits for an answer, not its wait
        # for a bundle's outputs, which ends only when the answer is in, or when the data stream
        # breaks: a harness that died before it opened one was awaited forever.) The runner may
        # ask more (it does not know the harness is gone): answer until it stops this handler.
        while not self._stopping.wait(_ABORT_INTERVAL_SECONDS):
            for future in list(self.control_conn._futures_by_id.values()):
                if not future.is_done():
                    future.set(
                        beam_fn_api_pb2.InstructionResponse(
                            instruction_id=future.instruction_id, error=failure
                        )
                    )

    def stop_worker(self) -> None:
        self._stopping.set()
        if self._process is None:
            return
        try:
            self._process.wait(_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
