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
from typing import Any

from beamjobs.worker.boot import boot_flags, materialize, provision_info
from beamjobs.worker.packages import staged_file_name

# The role the Go SDK gives its worker binary; older SDKs name the artifact "worker" instead.
GO_WORKER_BINARY = "beam:artifact:role:go_worker_binary:v1"
_LEGACY_NAME = "worker"


def is_worker_binary(artifact: Any) -> bool:
    """Whether the artifact is a Go worker binary, by its role or its legacy name."""
    return bool(artifact.role_urn == GO_WORKER_BINARY or staged_file_name(artifact) == _LEGACY_NAME)


def worker_binary(dependencies: Any) -> Any:
    """The artifact that is the Go worker binary, found as the image's boot finds it (the only
    artifact, or the one by role, or by legacy name)."""
    if len(dependencies) == 1:
        return dependencies[0]
    by_role = [a for a in dependencies if a.role_urn == GO_WORKER_BINARY]
    for artifact in by_role or [a for a in dependencies if is_worker_binary(a)]:
        return artifact
    raise SystemExit(f"the Go pipeline staged no worker binary ({GO_WORKER_BINARY})")


def main(argv: list[str] | None = None) -> None:
    args = boot_flags("python -m beamjobs.worker.go_boot", argv)
    info = provision_info(args)
    directory, options = materialize(args, info)
    binary = directory / "staged" / staged_file_name(worker_binary(info.dependencies))
    binary.chmod(0o755)
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
