"""The stand-in of Beam's Go SDK image (apache/beam_go_sdk), run as a PROCESS harness: the Go SDK
stages the pipeline's own program as its worker binary, and the image's boot runs that binary in
worker mode. This does the same, without a container:

    python -m beamjobs.worker.go_boot --semi_persist_dir=DIR <Beam's boot flags>

It reads the job's pipeline options and dependencies from the provision service, fetches the
dependencies from the artifact service into DIR/<harness id>/staged, writes the options where the
binary reads them (PIPELINE_OPTIONS_FILE), and becomes the binary (exec), connected to the
runner's endpoints."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from beamjobs.worker.boot import boot_flags, fetch, options_json, provision_info
from beamjobs.worker.packages import staged_file_name

# The role the Go SDK gives its worker binary; older SDKs name the artifact "worker" instead.
GO_WORKER_BINARY = "beam:artifact:role:go_worker_binary:v1"
_LEGACY_NAME = "worker"


def worker_binary(dependencies: Any) -> Any:
    """The artifact that is the Go worker binary, found as the image's boot finds it."""
    if len(dependencies) == 1:
        return dependencies[0]
    for artifact in dependencies:
        if artifact.role_urn == GO_WORKER_BINARY:
            return artifact
    for artifact in dependencies:
        if staged_file_name(artifact) == _LEGACY_NAME:
            return artifact
    raise SystemExit(f"the Go pipeline staged no worker binary ({GO_WORKER_BINARY})")


def main(argv: list[str] | None = None) -> None:
    args = boot_flags("python -m beamjobs.worker.go_boot", argv)
    info = provision_info(args)
    root = Path(args.semi_persist_dir or tempfile.mkdtemp(prefix="beam-go-harness-"))
    directory = root / args.id
    fetch(info.dependencies, args.artifact_endpoint, directory / "staged")
    binary = directory / "staged" / staged_file_name(worker_binary(info.dependencies))
    binary.chmod(0o755)
    options = directory / "pipeline_options.json"
    options.write_text(options_json(info))
    os.environ["PIPELINE_OPTIONS_FILE"] = str(options)
    if info.runner_capabilities:
        os.environ["RUNNER_CAPABILITIES"] = " ".join(info.runner_capabilities)
    os.execv(
        binary,
        [
            str(binary),
            "--worker=true",
            f"--id={args.id}",
            f"--logging_endpoint={args.logging_endpoint}",
            f"--control_endpoint={args.control_endpoint}",
            f"--semi_persist_dir={directory}",
        ],
    )


if __name__ == "__main__":
    main(sys.argv[1:])
