"""A boot command for Python SDK harnesses in PROCESS environments, for users who have Beam's
Python SDK but not the SDK container's boot binary:

    --environment_type=PROCESS --environment_config='{"command": "python -m beamjobs.worker.boot"}'

Like Beam's boot program it reads the job's pipeline options from the provision service, then
starts the SDK harness (apache_beam's sdk_worker_main) connected to the runner's endpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import grpc
from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc
from apache_beam.runners.worker import sdk_worker_main
from google.protobuf import json_format


def _descriptor(url: str) -> str:
    """An ApiServiceDescriptor in the text format sdk_worker_main reads."""
    return f'url: "{url}"'


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m beamjobs.worker.boot")
    parser.add_argument("--id", required=True)
    parser.add_argument("--provision_endpoint", required=True)
    parser.add_argument("--control_endpoint", required=True)
    parser.add_argument("--logging_endpoint", required=True)
    parser.add_argument("--artifact_endpoint", default="")
    parser.add_argument("--semi_persist_dir", default="")
    args = parser.parse_args(argv)

    with grpc.insecure_channel(args.provision_endpoint) as channel:
        info = (
            beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
            .GetProvisionInfo(
                beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[("worker_id", args.id)]
            )
            .info
        )
    os.environ.update(
        {
            "WORKER_ID": args.id,
            "PIPELINE_OPTIONS": json.dumps(json_format.MessageToDict(info.pipeline_options)),
            "CONTROL_API_SERVICE_DESCRIPTOR": _descriptor(args.control_endpoint),
            "LOGGING_API_SERVICE_DESCRIPTOR": _descriptor(args.logging_endpoint),
            "SEMI_PERSISTENT_DIRECTORY": args.semi_persist_dir
            or tempfile.mkdtemp(prefix="beam-harness-"),
        }
    )
    sdk_worker_main.main(sys.argv[:1])


if __name__ == "__main__":
    main()
