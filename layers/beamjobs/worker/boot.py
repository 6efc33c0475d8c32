"""A boot command for Python SDK harnesses in PROCESS environments, for users who have Beam's
Python SDK but not the SDK container's boot binary:

    --environment_type=PROCESS --environment_config='{"command": "python -m beamjobs.worker.boot"}'

Like Beam's boot program it reads the job's pipeline options and dependencies from the
provision service, fetches the dependencies from the artifact service into
<semi_persist_dir>/staged, installs the Python packages among them (into that directory, not
the user's environment), then starts the SDK harness (apache_beam's sdk_worker_main) connected
to the runner's endpoints; the harness loads a pickled main session from there itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
from apache_beam.portability.api import (
    beam_artifact_api_pb2,
    beam_artifact_api_pb2_grpc,
    beam_provision_api_pb2,
    beam_provision_api_pb2_grpc,
)
from apache_beam.runners.worker import sdk_worker_main
from google.protobuf import json_format

from beamjobs.worker.packages import StagedFiles, activate, install, staged_file_name


def descriptor(url: str) -> str:
    """An ApiServiceDescriptor in the text format the SDK harnesses read."""
    return f'url: "{url}"'


def boot_flags(prog: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The flags every Beam boot program takes (beamjobs.worker.process_environment)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--id", required=True)
    parser.add_argument("--provision_endpoint", required=True)
    parser.add_argument("--control_endpoint", required=True)
    parser.add_argument("--logging_endpoint", required=True)
    parser.add_argument("--artifact_endpoint", default="")
    parser.add_argument("--semi_persist_dir", default="")
    return parser.parse_args(argv)


def provision_info(args: argparse.Namespace) -> Any:
    """The job's ProvisionInfo (pipeline options, dependencies…) for this harness."""
    with grpc.insecure_channel(args.provision_endpoint) as channel:
        return (
            beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
            .GetProvisionInfo(
                beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[("worker_id", args.id)]
            )
            .info
        )


def options_json(info: Any) -> str:
    """The job's pipeline options as Beam's boot programs hand them to a harness: the Struct's
    JSON as protojson writes it, a whole number without a fraction (Go and Java read "-1" into
    an int option, not "-1.0")."""

    def whole(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: whole(item) for key, item in value.items()}
        if isinstance(value, list):
            return [whole(item) for item in value]
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    return json.dumps(whole(json_format.MessageToDict(info.pipeline_options)))


def materialize(args: argparse.Namespace, info: Any) -> tuple[Path, Path]:
    """For a harness whose boot becomes another program (Go's, Java's): its directory,
    <semi_persist_dir>/<harness id>, with the job's dependencies fetched into its `staged`, and
    the file of the job's pipeline options written there (its path, the second)."""
    root = Path(args.semi_persist_dir or tempfile.mkdtemp(prefix="beam-harness-"))
    directory = root / args.id
    fetch(info.dependencies, args.artifact_endpoint, directory / "staged")
    options = directory / "pipeline_options.json"
    options.write_text(options_json(info))
    return directory, options


def main(argv: list[str] | None = None) -> None:
    args = boot_flags("python -m beamjobs.worker.boot", argv)
    if args.semi_persist_dir:
        _boot(args, Path(args.semi_persist_dir))
        return
    # None given (a PROCESS environment's command, as Beam's runners start it): a directory of
    # this harness's own, gone with it (a container's would be), not left in /tmp per harness.
    with tempfile.TemporaryDirectory(prefix="beam-harness-") as semi_persist_dir:
        _boot(args, Path(semi_persist_dir))


def _boot(args: argparse.Namespace, semi_persist_dir: Path) -> None:
    info = provision_info(args)
    if info.dependencies:
        staged = fetch(info.dependencies, args.artifact_endpoint, semi_persist_dir / "staged")
        site_dir = install(staged, semi_persist_dir / "packages")
        if site_dir is not None:
            activate(site_dir)
    os.environ.update(
        {
            "WORKER_ID": args.id,
            "PIPELINE_OPTIONS": options_json(info),
            "CONTROL_API_SERVICE_DESCRIPTOR": descriptor(args.control_endpoint),
            "LOGGING_API_SERVICE_DESCRIPTOR": descriptor(args.logging_endpoint),
            "SEMI_PERSISTENT_DIRECTORY": str(semi_persist_dir),
        }
    )
    sdk_worker_main.main(sys.argv[:1])


def fetch(dependencies: Any, endpoint: str, directory: Path) -> StagedFiles:
    """Write each dependency's bytes, from the runner's artifact service, under its name."""
    directory.mkdir(parents=True, exist_ok=True)
    with grpc.insecure_channel(endpoint) as channel:
        retrieval = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(channel)
        for artifact in dependencies:
            with open(directory / staged_file_name(artifact), "wb") as out:
                request = beam_artifact_api_pb2.GetArtifactRequest(artifact=artifact)
                for chunk in retrieval.GetArtifact(request):
                    out.write(chunk.data)
    return StagedFiles.of(directory, dependencies)


if __name__ == "__main__":
    main()
