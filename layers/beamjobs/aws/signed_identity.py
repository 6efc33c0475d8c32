"""Proving an AWS identity to the Job API with a signed, unsent STS GetCallerIdentity request.

The client signs (SigV4, its own credentials) a GetCallerIdentity request and sends it in gRPC
metadata instead of sending it to STS. The shim sends it to STS: STS answers only for a valid
signature, and answers whose it is. No secret leaves the client, and the shim learns only who
called. (The AWS IAM Authenticator for Kubernetes and Vault's AWS auth method work this way.)

What keeps this safe:
- The shim sends the request to its own STS endpoint, never to one the client names, and
  with a fixed body: a client cannot make it call anything else.
- The request must sign the audience header, which names the deployment by the host its
  clients dial (the name TLS proves). So a request signed for something else (another service
  that accepts such proofs, or another Beamjobs deployment) is no proof here, and a proof given
  here is none anywhere else: a deployment that relays its callers' proofs gets nothing.
- A signature is refused once older (or newer) than 5 minutes (STS itself would accept it for
  15); a verified one is remembered for that long, by a hash of the proof. One STS refused is
  remembered as refused for a minute: sending it again costs the caller a round trip, not us
  one to STS.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import BotoCoreError
from botocore.httpsession import URLLib3Session
from botocore.parsers import create_parser
from botocore.session import get_session

from beamjobs.domain.errors import Unauthenticated, Unavailable
from beamjobs.domain.identity import principal_of

# The gRPC metadata entry that carries the proof.
METADATA_KEY = "x-beamjobs-identity"
AUDIENCE_HEADER = "x-beamjobs-audience"
_AUDIENCE_PREFIX = "beamjobs-job-api:"
SIGNATURE_LIFETIME_SECONDS = 5 * 60
# The names that reach a server on this machine's loopback interface.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
_FORM = "application/x-www-form-urlencoded; charset=utf-8"
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# gRPC's default limit on a call's metadata is 8 KiB; a proof with a role session's token is
# about 3 KiB.
_MAX_PROOF_BYTES = 7 * 1024
# The deployment a pooled worker's proof names (beamjobs.app.warm_offers): the worker channel,
# which verifies it, rather than a Job API endpoint.
WORKER_CHANNEL = "worker-channel"
# STS answers these for a proof that is not one: anything else is STS failing, not the caller.
_REFUSALS = frozenset(
    {
        "AccessDenied",
        "ExpiredToken",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "MissingAuthenticationToken",
        "RequestExpired",
        "SignatureDoesNotMatch",
    }
)
_VERIFIED_CACHE_SIZE = 10_000
REFUSAL_MEMORY_SECONDS = 60.0


def sts_url(region: str, endpoint_url: str | None = None) -> str:
    """The STS endpoint proofs are signed for and verified at: AWS's regional one, or an
    endpoint's (the embedded AWS's)."""
    return (endpoint_url or f"https://sts.{region}.amazonaws.com").rstrip("/") + "/"


def endpoint_host(endpoint: str) -> str:
    """The host of a Job API endpoint ("host:port", "[::1]:8099"), as audiences name it."""
    return (urlsplit(f"//{endpoint}").hostname or "").lower()


def audience(deployment: str) -> str:
    """The audience header's value for the deployment its clients reach at host `deployment`."""
    return _AUDIENCE_PREFIX + deployment.lower()


def sign(credentials: ReadOnlyCredentials, *, region: str, url: str, deployment: str) -> str:
    """A proof of the credentials' identity for the deployment reached at host `deployment`,
    signed now for the STS endpoint at `url`."""
    request = AWSRequest(
        method="POST",
        url=url,
        data=_BODY,
        headers={"Content-Type": _FORM, AUDIENCE_HEADER: audience(deployment)},
    )
    SigV4Auth(credentials, "sts", region).add_auth(request)
    proof = {"sts": url, "headers": dict(request.headers.items())}
    return base64.urlsafe_b64encode(json.dumps(proof, separators=(",", ":")).encode()).decode()


@functools.cache
def _caller_identity_output() -> Any:
    return get_session().get_service_model("sts").operation_model("GetCallerIdentity").output_shape


class Verifier:
    """Verifies proofs made for a deployment reached at one of `deployments` (hosts) with STS
    at `url`; remembers each verified one while it is valid."""

    def __init__(
        self,
        url: str,
        deployments: frozenset[str],
        *,
        http: URLLib3Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._audiences = frozenset(audience(host) for host in deployments)
        self._deployments = ", ".join(sorted(deployments))
        self._http = http or URLLib3Session(timeout=10)
        self._clock = clock
        self._verified: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        # Proofs STS refused: hash → (why, until when).
        self._refused: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def remembered(self, proof: str) -> str | None:
        """The principal of a proof verified before and still valid; None otherwise."""
        arn = self._remembered_arn(proof)
        return None if arn is None else principal_of(arn)

    def verify(self, proof: str) -> str:
        """The principal a proof proves (blocking: it may ask STS). Unauthenticated when it
        proves nothing; Unavailable when STS could not be asked."""
        return principal_of(self.verify_caller(proof))

    def verify_caller(self, proof: str) -> str:
        """The caller a proof proves, as STS names it: for a role, its session's ARN (which
        `verify` reads as its role)."""
        known = self._remembered_arn(proof)
        if known is not None:
            return known
        key = hashlib.sha256(proof.encode()).digest()
        with self._lock:
            refused = self._refused.get(key)
        if refused is not None and self._clock() < refused[1]:
            raise Unauthenticated(refused[0])
        headers, signed_at = self._checked(proof)
        try:
            arn = self._ask_sts(headers)
        except Unauthenticated as refusal:
            self._remember(
                self._refused, key, (refusal.message, self._clock() + REFUSAL_MEMORY_SECONDS)
            )
            raise
        self._remember(self._verified, key, (arn, signed_at + SIGNATURE_LIFETIME_SECONDS))
        return arn

    def _remembered_arn(self, proof: str) -> str | None:
        key = hashlib.sha256(proof.encode()).digest()
        with self._lock:
            known = self._verified.get(key)
            if known is None:
                return None
            arn, valid_until = known
            if self._clock() >= valid_until:
                del self._verified[key]
                return None
            self._verified.move_to_end(key)
            return arn

    def _remember(
        self, memory: OrderedDict[bytes, tuple[str, float]], key: bytes, value: tuple[str, float]
    ) -> None:
        with self._lock:
            memory[key] = value
            while len(memory) > _VERIFIED_CACHE_SIZE:
                memory.popitem(last=False)

    def _checked(self, proof: str) -> tuple[dict[str, str], float]:
        """The proof's headers and signing time, if it is well-formed, signs the audience and
        is fresh."""
        if len(proof) > _MAX_PROOF_BYTES:
            raise Unauthenticated("the identity proof is too large")
        try:
            decoded = json.loads(base64.urlsafe_b64decode(proof.encode()))
        except (binascii.Error, ValueError, UnicodeError):
            raise Unauthenticated("the identity proof is not one") from None
        headers = decoded.get("headers") if isinstance(decoded, dict) else None
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise Unauthenticated("the identity proof is not one")
        by_name = {name.lower(): value for name, value in headers.items()}
        if urlsplit(str(decoded.get("sts"))).netloc != urlsplit(self._url).netloc:
            raise Unauthenticated(
                f"the identity proof is signed for STS at {decoded.get('sts')}; "
                f"this Job API verifies with {self._url}"
            )
        authorization = by_name.get("authorization", "")
        signed = authorization.partition("SignedHeaders=")[2].partition(",")[0].split(";")
        stated = by_name.get(AUDIENCE_HEADER, "")
        if not stated.startswith(_AUDIENCE_PREFIX) or AUDIENCE_HEADER not in signed:
            raise Unauthenticated(
                f"the identity proof must sign {AUDIENCE_HEADER}: {_AUDIENCE_PREFIX}<the host "
                "of the Job API's endpoint>"
            )
        if stated not in self._audiences:
            raise Unauthenticated(
                f"the identity proof is for the Job API at {stated.removeprefix(_AUDIENCE_PREFIX)}"
                f"; this one is reached at {self._deployments}"
            )
        try:
            signed_at = (
                datetime.strptime(by_name.get("x-amz-date", ""), _DATE_FORMAT)
                .replace(tzinfo=UTC)
                .timestamp()
            )
        except ValueError:
            raise Unauthenticated("the identity proof has no valid X-Amz-Date") from None
        if abs(self._clock() - signed_at) > SIGNATURE_LIFETIME_SECONDS:
            raise Unauthenticated(
                "the identity proof was signed more than 5 minutes from now: sign a new one "
                "(and check this machine's clock)"
            )
        return headers, signed_at

    def _ask_sts(self, headers: dict[str, str]) -> str:
        request = AWSRequest(method="POST", url=self._url, data=_BODY, headers=headers)
        try:
            response = self._http.send(request.prepare())
        except BotoCoreError as error:
            raise Unavailable(f"could not verify the caller's identity with STS: {error}") from (
                error
            )
        parsed = create_parser("query").parse(
            {
                "status_code": response.status_code,
                "headers": response.headers,
                "body": response.content,
            },
            _caller_identity_output(),
        )
        if "Error" in parsed:
            code = parsed["Error"].get("Code", "")
            if code in _REFUSALS or response.status_code == 403:
                raise Unauthenticated(f"STS refused the identity proof: {code}")
            raise Unavailable(f"could not verify the caller's identity with STS: {code}")
        arn = parsed.get("Arn")
        if not isinstance(arn, str) or not arn:
            raise Unavailable("STS answered GetCallerIdentity without an ARN")
        return arn
