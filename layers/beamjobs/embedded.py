"""The embedded AWS: moto's server on localhost, shaped like a deployment by template.yaml."""

from __future__ import annotations

import os
from pathlib import Path

from moto.server import ThreadedMotoServer

from beamjobs.provision import provision
from beamjobs.settings import Settings

LOCAL_TABLE = "beamjobs-jobs"
LOCAL_BUCKET = "beamjobs-artifacts"
LOCAL_REGION = "us-east-1"


def use_offline_credentials() -> None:
    """moto accepts any credentials; make sure boto3 finds some and never looks further."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "embedded"),
        ("AWS_SECRET_ACCESS_KEY", "embedded"),
        ("AWS_DEFAULT_REGION", LOCAL_REGION),
    ):
        os.environ.setdefault(name, value)


class EmbeddedAws:
    """moto's threaded server on 127.0.0.1 (port 0 picks a free one)."""

    def __init__(self, port: int = 0) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint_url = ""

    def start(self) -> str:
        use_offline_credentials()
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self.endpoint_url

    def stop(self) -> None:
        self._server.stop()


def local_settings(endpoint_url: str) -> Settings:
    return Settings(
        table_name=LOCAL_TABLE,
        bucket_name=LOCAL_BUCKET,
        region=LOCAL_REGION,
        endpoint_url=endpoint_url,
    )


def start_embedded(template: Path, port: int = 0) -> tuple[EmbeddedAws, Settings]:
    """Start the embedded AWS and create the table and bucket from the template."""
    aws = EmbeddedAws(port)
    settings = local_settings(aws.start())
    provision(settings, template)
    return aws, settings
