"""Verifying callers when STS behaves as it really may: slow, throttling, unreachable. STS is
played by a small HTTP server (its answers are STS's wire format); the shim is the real one.
STS failing is never the caller's fault: UNAVAILABLE (retry), not UNAUTHENTICATED."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from botocore.credentials import ReadOnlyCredentials
from grpc_health.v1 import health_pb2, health_pb2_grpc

from beamjobs.api import job_api_pb2, job_api_pb2_grpc
from beamjobs.aws.signed_identity import METADATA_KEY, Verifier, sign, sts_url
from beamjobs.domain.identity import AccessPolicy
from beamjobs.shim.auth import NewProofRate
from tests.integration.conftest import running_shim

ALICE = "arn:aws:iam::111122223333:user/alice"
ANSWER = f"""<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<GetCallerIdentityResult><Arn>{ALICE}</Arn><UserId>AIDA</UserId>
<Account>111122223333</Account></GetCallerIdentityResult>
<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></GetCallerIdentityResponse>"""
THROTTLED = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>
<RequestId>r</RequestId></ErrorResponse>"""
REFUSED = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error>
<RequestId>r</RequestId></ErrorResponse>"""


class Sts:
    """STS on a local port: answers after `delay` seconds, or throttles while `throttling`, or
    refuses the signature while `refusing`."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.throttling = False
        self.refusing = False
        self.asked = 0
        sts = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                sts.asked += 1
                time.sleep(sts.delay)
                status, body = (
                    (400, THROTTLED)
                    if sts.throttling
                    else (403, REFUSED)
                    if sts.refusing
                    else (200, ANSWER)
                )
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = sts_url("us-east-1", f"http://127.0.0.1:{self._server.server_port}")
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def sts():
    server = Sts()
    yield server
    server.stop()


def _proof(url: str, key_id: str = "AKIDEXAMPLE") -> list[tuple[str, str]]:
    credentials = ReadOnlyCredentials(key_id, "secret", None)
    return [(METADATA_KEY, sign(credentials, region="us-east-1", url=url, deployment="127.0.0.1"))]


def _shim(settings, url):
    return running_shim(
        settings,
        authentication=(
            Verifier(url, frozenset({"127.0.0.1"})),
            AccessPolicy(allowed=("111122223333",)),
        ),
    )


def _get_jobs(channel, metadata, timeout=20.0):
    stub = job_api_pb2_grpc.JobServiceStub(channel)
    return stub.GetJobs(job_api_pb2.GetJobsRequest(), metadata=metadata, timeout=timeout)


def test_a_slow_sts_delays_only_the_calls_that_wait_for_it(settings, stores, executor, sts):
    with _shim(settings, sts.url) as shim:
        known = _proof(sts.url)
        _get_jobs(shim.channel, known)  # verified now, and remembered
        sts.delay = 3.0
        time.sleep(1.1)  # the next proof is signed in another second: a new proof
        slow = threading.Thread(target=_get_jobs, args=(shim.channel, _proof(sts.url)))
        slow.start()
        time.sleep(0.3)
        started = time.monotonic()
        health = health_pb2_grpc.HealthStub(shim.channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        _get_jobs(shim.channel, known)
        assert time.monotonic() - started < 1.0  # neither waited for STS
        slow.join(10)
        assert sts.asked == 2


def test_a_throttling_sts_is_unavailable_and_the_same_proof_verifies_once_it_recovers(
    settings, stores, executor, sts
):
    with _shim(settings, sts.url) as shim:
        proof = _proof(sts.url)
        sts.throttling = True
        with pytest.raises(grpc.RpcError) as refused:
            _get_jobs(shim.channel, proof)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "Throttling" in refused.value.details()
        sts.throttling = False
        assert _get_jobs(shim.channel, proof).job_info == []


def test_an_unreachable_sts_is_unavailable(settings, stores, executor, sts):
    url = sts.url
    sts.stop()
    with _shim(settings, url) as shim, pytest.raises(grpc.RpcError) as refused:
        _get_jobs(shim.channel, _proof(url))
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param(lambda url: [(METADATA_KEY, "x" * 7200)], id="oversized"),
        pytest.param(lambda url: _proof(url) * 2, id="two-proofs"),
        pytest.param(lambda url: [(METADATA_KEY + "-bin", b"\x00\x01")], id="binary"),
        pytest.param(lambda url: [(METADATA_KEY, "e30=")], id="empty-object"),
    ],
)
def test_hostile_proofs_are_unauthenticated_without_asking_sts(
    settings, stores, executor, sts, metadata
):
    with _shim(settings, sts.url) as shim, pytest.raises(grpc.RpcError) as refused:
        _get_jobs(shim.channel, metadata(sts.url))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert sts.asked == 0
    assert stores.jobs.recent_jobs(10) == []


def test_a_proof_sts_refused_is_refused_again_without_asking_sts(settings, stores, executor, sts):
    with _shim(settings, sts.url) as shim:
        sts.refusing = True
        forged = _proof(sts.url)
        for _ in range(20):
            with pytest.raises(grpc.RpcError) as refused:
                _get_jobs(shim.channel, forged)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "SignatureDoesNotMatch" in refused.value.details()
    assert sts.asked == 1


def test_a_flood_of_new_proofs_waits_for_sts_on_threads_of_its_own(settings, stores, executor, sts):
    with _shim(settings, sts.url) as shim:
        known = _proof(sts.url)
        _get_jobs(shim.channel, known)  # verified now, and remembered
        sts.delay = 2.0
        answered: list[object] = []

        def flooding(n: int) -> None:
            try:
                answered.append(_get_jobs(shim.channel, _proof(sts.url, f"AKID{n}"), timeout=60))
            except grpc.RpcError as error:
                answered.append(error.code())

        flood = [threading.Thread(target=flooding, args=(n,)) for n in range(40)]
        for caller in flood:
            caller.start()
        time.sleep(0.5)
        started = time.monotonic()
        _get_jobs(shim.channel, known)
        assert time.monotonic() - started < 1.0  # it waited behind none of them
        for caller in flood:
            caller.join(60)
        assert len(answered) == 40 and all(
            isinstance(answer, job_api_pb2.GetJobsResponse) for answer in answered
        )


def test_new_proofs_from_one_address_are_verified_at_a_bounded_rate(
    settings, stores, executor, sts, monkeypatch
):
    monkeypatch.setattr(NewProofRate, "PER_SECOND", 1.0)
    with _shim(settings, sts.url) as shim:
        known = _proof(sts.url)
        _get_jobs(shim.channel, known)
        started = time.monotonic()
        refused = []
        for n in range(NewProofRate.BURST + 20):
            try:
                _get_jobs(shim.channel, _proof(sts.url, f"AKID{n}"))
            except grpc.RpcError as error:
                refused.append(error)
        elapsed = time.monotonic() - started
        # The known one, and the burst plus what a second a second brought back; no more.
        assert sts.asked <= 1 + NewProofRate.BURST + int(elapsed) + 1
        assert len(refused) >= 20 - int(elapsed) - 1
        assert {error.code() for error in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "too many new identity proofs from ipv4:127.0.0.1" in refused[0].details()
        # A proof verified before is not counted: its caller is served as ever.
        assert _get_jobs(shim.channel, known).job_info == []
