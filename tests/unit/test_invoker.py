import io
import json

import boto3
import pytest
from botocore.stub import Stubber

from beamjobs.api import job_api_pb2, jobs_pb2
from beamjobs.errors import BeamjobsError, InvalidArgument, Unavailable
from beamjobs.identity import LOCAL_CALLER
from beamjobs.shim.invoker import (
    FUNCTION_FOR_RPC,
    MAX_PAYLOAD_BYTES,
    InProcessInvoker,
    LambdaInvoker,
    event_for,
)

NAMES = {"control": "stack-ControlFunction-abc", "query": "stack-QueryFunction-def"}


@pytest.fixture
def lambda_client():
    client = boto3.client(
        "lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _payload(answer):
    return io.BytesIO(json.dumps(answer).encode())


def _expected(event, function="query"):
    return {
        "FunctionName": NAMES[function],
        "InvocationType": "RequestResponse",
        "Payload": json.dumps(event, separators=(",", ":")).encode(),
    }


def test_every_unary_rpc_and_the_staging_calls_have_a_function():
    unary = {
        method.name
        for module, service in ((job_api_pb2, "JobService"), (jobs_pb2, "Jobs"))
        for method in module.DESCRIPTOR.services_by_name[service].methods
        if not method.server_streaming and not method.client_streaming
    }
    assert len(unary) == 12
    assert set(FUNCTION_FOR_RPC) == unary | {"BeginStaging", "RecordStaging"}
    assert set(FUNCTION_FOR_RPC.values()) == set(NAMES)


def test_each_call_gets_its_own_request_id():
    _, first = event_for("GetState", LOCAL_CALLER, {"job_id": "a"})
    _, second = event_for("GetState", LOCAL_CALLER, {"job_id": "a"})
    assert first["request_id"] != second["request_id"]


def test_lambda_invoker_returns_the_functions_answer(lambda_client):
    client, stubber = lambda_client
    function, event = event_for("GetState", LOCAL_CALLER, {"job_id": "j"})
    answer = {"result": {"state": "RUNNING", "timestamp": 1.5}}
    stubber.add_response(
        "invoke", {"StatusCode": 200, "Payload": _payload(answer)}, _expected(event)
    )
    assert LambdaInvoker(client, NAMES).invoke(function, event) == answer


def test_a_throttled_function_is_retried_with_the_same_event(lambda_client):
    client, stubber = lambda_client
    function, event = event_for("Run", LOCAL_CALLER, {"preparation_id": "p"})
    for _ in range(2):
        stubber.add_client_error(
            "invoke",
            service_error_code="TooManyRequestsException",
            http_status_code=429,
            expected_params=_expected(event, "control"),
        )
    answer = {"result": {"job_id": "p"}}
    stubber.add_response(
        "invoke", {"StatusCode": 200, "Payload": _payload(answer)}, _expected(event, "control")
    )
    sleeps = []
    invoker = LambdaInvoker(client, NAMES, sleep=sleeps.append)
    assert invoker.invoke(function, event) == answer
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0]


def test_a_function_throttled_past_the_retries_is_unavailable(lambda_client):
    client, stubber = lambda_client
    function, event = event_for("GetJobs", LOCAL_CALLER, {})
    for _ in range(3):
        stubber.add_client_error(
            "invoke", service_error_code="TooManyRequestsException", http_status_code=429
        )
    invoker = LambdaInvoker(client, NAMES, attempts=3, sleep=lambda _: None)
    with pytest.raises(Unavailable, match="after 3 attempts"):
        invoker.invoke(function, event)


def test_a_failing_function_is_an_internal_error_with_its_message(lambda_client):
    client, stubber = lambda_client
    function, event = event_for("GetJobs", LOCAL_CALLER, {})
    crash = {"errorMessage": "KeyError: 'jobs'", "errorType": "KeyError"}
    stubber.add_response(
        "invoke",
        {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": _payload(crash)},
        _expected(event),
    )
    with pytest.raises(BeamjobsError, match="KeyError: 'jobs'") as raised:
        LambdaInvoker(client, NAMES).invoke(function, event)
    assert raised.value.code == "INTERNAL"


def test_a_missing_function_is_unavailable_without_retrying(lambda_client):
    client, stubber = lambda_client
    function, event = event_for("GetJobs", LOCAL_CALLER, {})
    stubber.add_client_error(
        "invoke", service_error_code="ResourceNotFoundException", http_status_code=404
    )
    with pytest.raises(Unavailable, match="ResourceNotFoundException"):
        LambdaInvoker(client, NAMES).invoke(function, event)


def test_payloads_over_the_lambda_limit_are_never_sent(lambda_client):
    client, _ = lambda_client
    function, event = event_for("Prepare", LOCAL_CALLER, {"job_name": "x" * MAX_PAYLOAD_BYTES})
    with pytest.raises(InvalidArgument, match="too large"):
        LambdaInvoker(client, NAMES).invoke(function, event)


def test_in_process_invoker_passes_json_and_a_context():
    seen = {}

    def handler(event, context):
        seen["event"], seen["context"] = event, context
        return {"result": {"ok": True}}

    function, event = event_for("GetJobs", LOCAL_CALLER, {})
    assert InProcessInvoker({"query": handler}).invoke(function, event) == {"result": {"ok": True}}
    assert seen["event"] == event and seen["event"] is not event
    assert seen["context"].function_name == "query"
    assert seen["context"].get_remaining_time_in_millis() > 0
