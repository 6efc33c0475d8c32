"""Principals, who may call, and the verification of identity proofs (with STS played by a
stand-in HTTP session: the real replay to STS is in tests/e2e/test_authentication.py)."""

from __future__ import annotations

import base64
import json

import pytest
from botocore.awsrequest import AWSResponse
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import EndpointConnectionError

from beamjobs.aws.signed_identity import SIGNATURE_LIFETIME_SECONDS, Verifier, sign, sts_url
from beamjobs.domain.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from beamjobs.domain.identity import AccessPolicy, Caller, parse_principals, principal_of
from beamjobs.shim.auth import NewProofRate

URL = sts_url("us-east-1")
DEPLOYMENT = "jobs.example.com"
ALICE = "arn:aws:iam::111122223333:user/alice"
ANSWER = """<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>{arn}</Arn><UserId>AIDA</UserId><Account>111122223333</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"""
REFUSAL = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>no</Message></Error>
  <RequestId>r</RequestId>
</ErrorResponse>"""


class FakeSts:
    """Answers every request with one status and body; records what it was sent."""

    def __init__(self, status: int = 200, body: str = ANSWER.format(arn=ALICE)) -> None:
        self.status, self.body = status, body
        self.sent: list = []

    def send(self, request):
        self.sent.append(request)
        if self.status == 0:
            raise EndpointConnectionError(endpoint_url=request.url)
        return AWSResponse(request.url, self.status, {}, _Raw(self.body.encode()))


class _Raw:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_):
        yield self._data


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _proof(deployment: str = DEPLOYMENT) -> str:
    return sign(
        ReadOnlyCredentials("AKIDEXAMPLE", "secret", None),
        region="us-east-1",
        url=URL,
        deployment=deployment,
    )


def _verifier(http, clock) -> Verifier:
    return Verifier(URL, frozenset({DEPLOYMENT}), http=http, clock=clock)


def _signed_at(proof: str) -> float:
    import datetime

    stamp = json.loads(base64.urlsafe_b64decode(proof))["headers"]["X-Amz-Date"]
    return (
        datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC).timestamp()
    )


@pytest.mark.parametrize(
    ("arn", "principal"),
    [
        (ALICE, ALICE),
        ("arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:root"),
        (
            "arn:aws:sts::111122223333:assumed-role/Analysts/alice@example.com",
            "arn:aws:iam::111122223333:role/Analysts",
        ),
        (
            "arn:aws-cn:sts::111122223333:assumed-role/ci/run-42",
            "arn:aws-cn:iam::111122223333:role/ci",
        ),
    ],
)
def test_a_role_session_is_its_role_and_anything_else_itself(arn, principal):
    assert principal_of(arn) == principal


def test_allowed_principals_are_named_by_arn_or_by_account():
    policy = AccessPolicy(allowed=(ALICE, "444455556666"), admins=("777788889999",))
    assert policy.caller(ALICE) == Caller(ALICE)
    assert policy.caller("arn:aws:iam::444455556666:role/ci") == Caller(
        "arn:aws:iam::444455556666:role/ci"
    )
    assert policy.caller("arn:aws:iam::777788889999:user/ops").admin
    with pytest.raises(PermissionDenied, match="user/bob is not allowed"):
        policy.caller("arn:aws:iam::111122223333:user/bob")


def test_a_workers_role_is_never_a_caller_even_where_its_account_may_call():
    worker = "arn:aws:iam::111122223333:role/stack-WorkerTaskRole-x"
    policy = AccessPolicy(allowed=("111122223333",), admins=(ALICE,), workers=(worker,))
    with pytest.raises(PermissionDenied, match="workers are not callers"):
        policy.caller(
            principal_of("arn:aws:sts::111122223333:assumed-role/stack-WorkerTaskRole-x/t")
        )
    assert policy.caller(ALICE).admin


def test_an_account_id_among_the_admins_is_refused_with_the_reason():
    from beamjobs.settings import Settings

    with pytest.raises(InvalidArgument, match="names account 111122223333: every principal"):
        Settings.from_env(
            {
                "BEAMJOBS_TABLE": "t",
                "BEAMJOBS_BUCKET": "b",
                "BEAMJOBS_REQUIRE_AUTH": "true",
                "BEAMJOBS_ALLOWED_PRINCIPALS": ALICE,
                "BEAMJOBS_ADMIN_PRINCIPALS": "111122223333",
            }
        )


@pytest.mark.parametrize("text", ["alice", "1234", "arn:aws:s3:::bucket", "*"])
def test_a_principal_list_takes_only_arns_and_account_ids(text):
    with pytest.raises(ValueError, match="ARNs or 12-digit account ids"):
        parse_principals(text)


def test_a_caller_owns_its_jobs_and_an_admin_every_job():
    assert Caller(ALICE).owns(ALICE)
    assert not Caller(ALICE).owns("arn:aws:iam::111122223333:user/bob")
    assert not Caller(ALICE).owns(None)
    assert Caller("arn:aws:iam::111122223333:user/ops", admin=True).owns(None)
    with pytest.raises(InvalidArgument):
        Caller.from_wire({"principal": ALICE, "admin": "yes"})


def test_a_verified_proof_is_remembered_while_valid_then_asked_again():
    proof = _proof()
    sts, clock = FakeSts(), Clock(_signed_at(proof))
    verifier = _verifier(sts, clock)
    assert verifier.verify(proof) == ALICE
    assert verifier.verify(proof) == ALICE
    assert len(sts.sent) == 1
    # The replay is the signed request, to this verifier's STS, with the fixed body.
    assert (
        sts.sent[0].url == URL and sts.sent[0].body == "Action=GetCallerIdentity&Version=2011-06-15"
    )
    clock.now += SIGNATURE_LIFETIME_SECONDS + 1
    assert verifier.remembered(proof) is None
    with pytest.raises(Unauthenticated, match="more than 5 minutes"):
        verifier.verify(proof)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (403, REFUSAL.format(code="SignatureDoesNotMatch"), Unauthenticated),
        (403, REFUSAL.format(code="InvalidClientTokenId"), Unauthenticated),
        (403, REFUSAL.format(code="ExpiredToken"), Unauthenticated),
        (400, REFUSAL.format(code="Throttling"), Unavailable),
        (503, REFUSAL.format(code="ServiceUnavailable"), Unavailable),
        (0, "", Unavailable),
    ],
)
def test_sts_refusing_is_unauthenticated_and_sts_failing_is_unavailable(status, body, error):
    proof = _proof()
    verifier = _verifier(FakeSts(status, body), Clock(_signed_at(proof)))
    with pytest.raises(error):
        verifier.verify(proof)
    assert verifier.remembered(proof) is None


def test_a_proof_for_a_future_time_is_refused_as_for_a_past_one():
    proof = _proof()
    verifier = _verifier(FakeSts(), Clock(_signed_at(proof) - 6 * 60))
    with pytest.raises(Unauthenticated, match="more than 5 minutes"):
        verifier.verify(proof)


def test_a_proof_for_another_deployment_is_refused_within_its_window():
    proof = _proof("jobs.other.example.com")
    sts = FakeSts()
    verifier = _verifier(sts, Clock(_signed_at(proof)))
    with pytest.raises(Unauthenticated, match="for the Job API at jobs.other.example.com"):
        verifier.verify(proof)
    assert not sts.sent  # refused before STS is asked


@pytest.mark.parametrize(
    ("host", "advertised", "hosts"),
    [
        ("localhost", None, {"localhost", "127.0.0.1", "::1"}),
        ("0.0.0.0", None, {"localhost", "127.0.0.1", "::1"}),
        ("10.0.0.5", None, {"10.0.0.5"}),
        ("0.0.0.0", "Jobs.Example.com:443", {"jobs.example.com"}),
        ("0.0.0.0", "[fd00::1]:8099", {"fd00::1"}),
    ],
)
def test_a_shim_accepts_proofs_for_the_host_its_clients_dial(host, advertised, hosts):
    from beamjobs.shim.server import deployment_hosts

    assert deployment_hosts(host, advertised) == hosts


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.7", "::"])
def test_a_shim_that_authenticates_no_one_refuses_to_serve_beyond_this_machine(host, capsys):
    from beamjobs.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(["serve", "--host", host])
    assert refused.value.code == 2
    assert "add --require-auth" in capsys.readouterr().err


def test_the_local_proxy_refuses_to_listen_beyond_this_machine():
    import asyncio

    from beamjobs.cli.connect import start_proxy

    with pytest.raises(ValueError, match="this machine only"):
        asyncio.run(start_proxy("shim:443", "0.0.0.0:8099", identity=object()))  # type: ignore[arg-type]


def test_new_proofs_are_counted_per_address_and_come_back_with_time():
    now = [0.0]
    rate = NewProofRate(clock=lambda: now[0])
    for _ in range(NewProofRate.BURST):
        rate.take("ipv4:10.0.0.1")
    with pytest.raises(ResourceExhausted, match="too many new identity proofs from ipv4:10.0.0.1"):
        rate.take("ipv4:10.0.0.1")
    rate.take("ipv4:10.0.0.2")  # another address has its own
    now[0] += 1.0 / NewProofRate.PER_SECOND
    rate.take("ipv4:10.0.0.1")
    with pytest.raises(ResourceExhausted):
        rate.take("ipv4:10.0.0.1")
