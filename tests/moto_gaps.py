"""A gap of moto's Step Functions, bridged for the tests that execute the run-job state machine
(the deployment test, and the simulated AWS path): its ECS service integration (ecs:runTask),
and its AWS SDK integrations (aws-sdk:ecs:describeTasks), pass the state machine's PascalCase
parameters to boto3 unconverted, and answer in boto3's camelCase. AWS converts both, with the
API's own shapes; so does this bridge, using botocore's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import botocore.session
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_aws_sdk,
    state_task_service_ecs,
)

_session = botocore.session.get_session()


def _to_shape(value: Any, shape: Any) -> Any:
    """PascalCase keys (as written in ASL) → the member names of a botocore shape."""
    if shape.type_name == "structure" and isinstance(value, dict):
        members = {name.lower(): name for name in shape.members}
        return {
            members[key.lower()]: _to_shape(item, shape.members[members[key.lower()]])
            for key, item in value.items()
            if key.lower() in members
        }
    if shape.type_name == "list" and isinstance(value, list):
        return [_to_shape(item, shape.member) for item in value]
    return value


def _pascal(value: Any) -> Any:
    if isinstance(value, dict):
        return {key[:1].upper() + key[1:]: _pascal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_pascal(item) for item in value]
    return value


def _normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
    action = "".join(part.title() for part in self._get_boto_service_action().split("_"))
    model = _session.get_service_model(self._get_boto_service_name())
    converted = _to_shape(parameters, model.operation_model(action).input_shape)
    parameters.clear()
    parameters.update(converted)


def _normalise_response(self, response, boto_service_name=None, service_action_name=None):
    if isinstance(response, dict):
        converted = _pascal(response)
        response.clear()
        response.update(converted)


def bridge_ecs_casing(setattr_: Callable[[Any, str, Any], None] = setattr) -> None:
    """Install the bridge with `setattr_` (pytest's monkeypatch.setattr undoes it after a
    test; the plain one keeps it for the process, as the benchmark's)."""
    for service in (
        state_task_service_ecs.StateTaskServiceEcs,
        state_task_service_aws_sdk.StateTaskServiceAwsSdk,
    ):
        setattr_(service, "_normalise_parameters", _normalise_parameters)
        setattr_(service, "_normalise_response", _normalise_response)
