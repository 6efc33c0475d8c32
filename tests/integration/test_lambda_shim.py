"""The shim as deployed: unary RPCs reach the handlers through LambdaInvoker (lambda.invoke),
here against a Lambda client that runs the real handlers in process — or throttles, or fails."""

import dataclasses
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from botocore.exceptions import ClientError
from google.protobuf import struct_pb2

from beamjobs.api import job_api_pb2 as api
from beamjobs.api import job_api_pb2_grpc
from beamjobs.aws import clients
from beamjobs.aws.invoker import LambdaInvoker
from beamjobs.local.invoker import LocalContext
from beamjobs_functions.control.app import lambda_handler as control
from beamjobs_functions.query.app import lambda_handler as query
from tests.iam_policies import acting_as
from tests.integration.conftest import FUNCTION_ROLES, pipeline_bytes, running_shim

FUNCTIONS = {"control": "beamjobs-ControlFunction-1", "query": "beamjobs-QueryFunction-1"}


class LambdaClient:
    """lambda.invoke of the deployed functions, run here; `behaviour` per function name:
    "run", "throttle" (TooManyRequestsException) or "crash" (an unhandled FunctionError)."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.calls = []
        self._handlers = {FUNCTIONS["control"]: control, FUNCTIONS["query"]: query}

    def invoke(self, FunctionName, InvocationType, Payload):
        assert InvocationType == "RequestResponse"
        self.calls.append(FunctionName)
        behaviour = self.behaviour.get(FunctionName, "run")
        if behaviour == "throttle":
            raise ClientError(
                {"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"}},
                "Invoke",
            )
        if behaviour == "crash":
            body = {"errorMessage": "division by zero", "errorType": "ZeroDivisionError"}
            return {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": io.BytesIO(json.dumps(body).encode()),
            }
        role = FUNCTION_ROLES[next(k for k, v in FUNCTIONS.items() if v == FunctionName)]
        with acting_as(role):
            answer = self._handlers[FunctionName](json.loads(Payload), LocalContext(FunctionName))
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(answer).encode())}


def _invoker(client):
    return LambdaInvoker(client, FUNCTIONS, backoff_seconds=0.01)


def _prepare(stub):
    return stub.Prepare(
        api.PrepareJobRequest(
            pipeline=pipeline_bytes(), pipeline_options=struct_pb2.Struct(), job_name="job"
        )
    ).preparation_id


def test_every_unary_rpc_goes_through_lambda_invoke(settings, stores, executor):
    client = LambdaClient({})
    with running_shim(settings, _invoker(client)) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        job_id = _prepare(stub)
        stub.Run(api.RunJobRequest(preparation_id=job_id))
        assert stub.GetState(api.GetJobStateRequest(job_id=job_id)).state == api.JobState.STARTING
        assert [i.job_id for i in stub.GetJobs(api.GetJobsRequest()).job_info] == [job_id]
    assert client.calls == [FUNCTIONS[f] for f in ("control", "control", "query", "query")]
    assert executor.started == [job_id]


def test_a_function_still_throttled_after_botocores_retries_is_unavailable(
    settings, stores, executor
):
    client = LambdaClient({FUNCTIONS["query"]: "throttle"})
    with running_shim(settings, _invoker(client)) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        job_id = _prepare(stub)  # control is fine
        with pytest.raises(grpc.RpcError) as throttled:
            stub.GetState(api.GetJobStateRequest(job_id=job_id))
    assert throttled.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "TooManyRequestsException" in throttled.value.details()
    assert client.calls.count(FUNCTIONS["query"]) == 1  # botocore's retries are the only ones


def test_a_failing_function_is_internal_with_its_message(settings, stores, executor):
    client = LambdaClient({FUNCTIONS["control"]: "crash"})
    with running_shim(settings, _invoker(client)) as shim:
        stub = job_api_pb2_grpc.JobServiceStub(shim.channel)
        with pytest.raises(grpc.RpcError) as failed:
            _prepare(stub)
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert "division by zero" in failed.value.details()
    assert client.calls == [FUNCTIONS["control"]]  # a crash is not retried


class ThrottlingLambda(BaseHTTPRequestHandler):
    """Lambda's Invoke API on localhost: throttled `throttles` times, then answering."""

    throttles = 2
    calls = 0

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls += 1
        throttled = type(self).calls <= type(self).throttles
        body = json.dumps(
            {"Type": "User", "message": "Rate exceeded"} if throttled else {"result": {"ok": 1}}
        ).encode()
        self.send_response(429 if throttled else 200)
        if throttled:
            self.send_header("x-amzn-ErrorType", "TooManyRequestsException")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_botocore_retries_a_throttled_invocation_for_the_invoker(settings):
    # Given Lambda throttling the first two invocations, and the deployment's lambda client
    server = ThreadingHTTPServer(("127.0.0.1", 0), ThrottlingLambda)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    client = clients.client("lambda", dataclasses.replace(settings, endpoint_url=endpoint))
    try:
        # When the invoker calls a function once
        answer = LambdaInvoker(client, FUNCTIONS).invoke(
            "query", {"rpc": "GetJobs", "request_id": "r", "request": {}}
        )
    finally:
        server.shutdown()
    # Then botocore sent it three times, and the answer is the third's
    assert answer == {"result": {"ok": 1}} and ThrottlingLambda.calls == 3
