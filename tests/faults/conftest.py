"""Fault tests run on the embedded AWS, as the integration tests do (each component within its
role, as AWS enforces it), with the harness attached to the process's own AWS clients (the
ones the stores, handlers and shim use)."""

import pytest

from beamjobs.aws import clients
from tests.faults.harness import Faults
from tests.integration.conftest import (  # noqa: F401 (fixtures shared with the integration tests)
    calls_within_their_roles,
    channel,
    embedded_aws,
    executor,
    fresh_handlers,
    iam_enforcement,
    settings,
    stores,
    transformed_template,
)


@pytest.fixture
def faults(request):
    configured = request.getfixturevalue("settings")
    services = ("dynamodb", "s3", "dynamodbstreams")
    attached = [clients.client(service, configured) for service in services]
    harness = Faults().attach(*attached)
    yield harness
    harness.detach(*attached)
