import io
import json

import boto3
import pytest
from botocore.stub import Stubber

from beamjobs.api import job_api_pb2, jobs_pb2
from beamjobs.aws.invoker import FUNCTION_FOR_RPC, MAX_PAYLOAD_BYTES, LambdaInvoker, event_for
from beamjobs.domain.errors import BeamjobsError, InvalidArgument, Unavailable
from beamjobs.domain.identity import LOCAL_CALLER
from beamjobs.local.invoker import InProcessInvoker

# The key events are signed with (their signature is checked by the handlers, elsewhere).
KEY = b"unit-tests-caller-key"
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
    _, first = event_for("GetState", LOCAL_CALLER, {"job_id": "a"}, KEY)
    _, second = event_for("GetState", LOCAL_CALLER, {"job_id": "a"}, KEY)
    assert first["request_id"] != second["request_id"]


def test_lambda_invoker_returns_the_functions_answer(lambda_client):
    client, stubber = lambda_client
    function, event = event_for("GetState", LOCAL_CALLER, {"job_id": "j"}, KEY)
    answer = {"result": {"state": "RUNNING", "timestamp": 1.5}}
    stubber.add_response(
        "invoke", {"StatusCode": 200, "Payload": _payload(answer)}, _expected(event)
    )
    assert LambdaInvoker(client, NAMES).invoke(function, event) == answer


def test_a_throttle_that_outlasts_botocores_retries_is_unavailable_at_once(lambda_client):
    # Given a function whose invocation is throttled (botocore has retried it already: the
    # stubbed client answers after its retries)
    client, stubber = lambda_client
    function, event = event_for("GetJobs", LOCAL_CALLER, {}, KEY)
    stubber.add_client_error(
        "invoke", service_error_code="TooManyRequestsException", http_status_code=429
    )
    sleeps = []
    # When the invoker calls it, then it answers UNAVAILABLE without a second loop of its own
    with pytest.raises(Unavailable, match="TooManyRequestsException"):
        LambdaInvoker(client, NAMES, sleep=sleeps.append).invoke(function, event)
    assert sleeps == []


def test_an_invocation_whose_answer_was_lost_is_sent_again_with_the_same_event(lambda_client):
    # Given a Run whose function's answer is lost once (its outcome in doubt)
    client, stubber = lambda_client
    function, event = event_for("Run", LOCAL_CALLER, {"preparation_id": "p"}, KEY)
    in_progress = {"error": {"code": "UNAVAILABLE", "message": "...", "in_progress": True}}
    stubber.add_response(
        "invoke", {"StatusCode": 200, "Payload": _payload(in_progress)}, _expected(event, "control")
    )
    answer = {"result": {"job_id": "p"}}
    stubber.add_response(
        "invoke", {"StatusCode": 200, "Payload": _payload(answer)}, _expected(event, "control")
    )
    sleeps = []
    # When it is invoked, then the same event goes again and its answer is the call's
    assert LambdaInvoker(client, NAMES, sleep=sleeps.append).invoke(function, event) == answer
    assert len(sleeps) == 1


def test_a_failing_function_is_an_internal_error_with_its_message(lambda_client):
    client, stubber = lambda_client
    function, event = event_for("GetJobs", LOCAL_CALLER, {}, KEY)
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
    function, event = event_for("GetJobs", LOCAL_CALLER, {}, KEY)
    stubber.add_client_error(
        "invoke", service_error_code="ResourceNotFoundException", http_status_code=404
    )
    with pytest.raises(Unavailable, match="ResourceNotFoundException"):
        LambdaInvoker(client, NAMES).invoke(function, event)


def test_payloads_over_the_lambda_limit_are_never_sent(lambda_client):
    client, _ = lambda_client
    function, event = event_for("Prepare", LOCAL_CALLER, {"job_name": "x" * MAX_PAYLOAD_BYTES}, KEY)
    with pytest.raises(InvalidArgument, match="too large"):
        LambdaInvoker(client, NAMES).invoke(function, event)


def test_in_process_invoker_passes_json_and_a_context():
    seen = {}

    def handler(event, context):
        seen["event"], seen["context"] = event, context
        return {"result": {"ok": True}}

    function, event = event_for("GetJobs", LOCAL_CALLER, {}, KEY)
    assert InProcessInvoker({"query": handler}).invoke(function, event) == {"result": {"ok": True}}
    assert seen["event"] == event and seen["event"] is not event
    assert seen["context"].function_name == "query"
    assert seen["context"].get_remaining_time_in_millis() > 0
