"""AWS IAM identities, proved the way Vault's IAM auth does it: a signed ``sts:GetCallerIdentity`` request.

Client side (``sign_identity_request``): botocore's default credential chain (environment, shared
config/credentials files, container endpoint, EC2 instance profile through IMDS) signs, with SigV4 for service
``sts``, the request ``POST Action=GetCallerIdentity&Version=2011-06-15`` but does not send it. The method,
URL, headers and body travel as the token (``aws-iam:`` + base64url JSON). When an audience is given, the
``X-Databricks-Nats-Audience`` header is part of the signature, so a proof made for one NATS deployment cannot
be replayed at another that requires a different audience. The proof is good for 10 minutes (less when the
credentials expire sooner); a client signs a fresh one for every connect.

Server side (``AwsIamVerifier``): the service never trusts the token's URL (no SSRF). It checks the proof's
shape (POST, a body that parses to exactly GetCallerIdentity, an ``AWS4-HMAC-SHA256`` Authorization for
service ``sts``, the audience header present, equal and signed, an ``X-Amz-Date`` neither older than
``max_age`` nor more than 5 minutes ahead) and forwards only what SigV4 needs (the signed headers,
Authorization, X-Amz-Security-Token, Content-Type) to the configured STS endpoint. STS recomputes the
signature; its answer (the documented ``GetCallerIdentityResponse`` XML) names the caller. Reasons given in
``Refused`` never contain the signature, the session token or the access key.

An assumed-role caller (``arn:aws:sts::<acct>:assumed-role/<role>/<session>``, what an instance profile
gives) is mapped to its role ARN ``arn:aws:iam::<acct>:role/<role>`` for policy rules; STS does not report the
role's path, so policies match role names without a path. botocore is imported lazily (the ``aws`` extra);
the verifier needs only the standard library.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import http.client
import json
import re
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.identity.identity import Identity, Refused
from databricks_nats.integrations.identity.urls import require_https

__all__ = ["AUDIENCE_HEADER", "TOKEN_PREFIX", "AwsIamVerifier", "AwsProof", "sign_identity_request"]

TOKEN_PREFIX = "aws-iam:"
AUDIENCE_HEADER = "X-Databricks-Nats-Audience"

_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
_QUERY = {"Action": ["GetCallerIdentity"], "Version": ["2011-06-15"]}
_PROOF_LIFETIME = 600.0
_FUTURE_SKEW = 300.0
_MAX_TOKEN = 16 * 1024
_MAX_RESPONSE = 64 * 1024
_MALFORMED = "malformed AWS proof"
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[a-z0-9;_.-]+),"
    r"\s*Signature=[0-9a-f]{64}"
)
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")  # an HTTP token
_VALUE = re.compile(r"[\x20-\x7e]{0,4096}")  # SigV4 headers are printable ASCII
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True, repr=False)
class AwsProof:
    """A signed GetCallerIdentity request (``token``, never printed) and when to sign again (``expires_at``)."""

    token: str
    expires_at: float

    def __repr__(self) -> str:
        return f"AwsProof(token=<redacted>, expires_at={self.expires_at!r})"


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def sign_identity_request(
    *,
    audience: str | None = None,
    region: str | None = None,
    endpoint: str | None = None,
    session: Any = None,
) -> AwsProof:
    """Sign ``sts:GetCallerIdentity`` with botocore's default credentials; nothing is sent anywhere.

    ``endpoint`` defaults to the regional STS endpoint of ``region``, else the global
    ``https://sts.amazonaws.com`` (signed for ``us-east-1``); it must be the endpoint the verifier forwards
    to. ``session`` is a botocore (or boto3) session; default: a new botocore session.
    """
    try:
        import botocore.session
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.exceptions import BotoCoreError
    except ImportError:
        raise ConfigurationError(
            "aws_iam", "the aws_iam source needs botocore: pip install 'databricks-nats[aws]'"
        ) from None
    if endpoint is None:
        endpoint = f"https://sts.{region}.amazonaws.com" if region else "https://sts.amazonaws.com"
    if urlsplit(endpoint).scheme not in ("https", "http") or not urlsplit(endpoint).hostname:
        raise ConfigurationError("aws_iam", f"not an http(s) STS endpoint URL: {endpoint!r}")
    region = region or "us-east-1"
    session = session if session is not None else botocore.session.Session()
    try:
        credentials = session.get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except BotoCoreError as e:  # botocore's messages name variables and files, never values
        raise ConfigurationError("aws_iam", f"cannot load AWS credentials: {type(e).__name__}: {e}") from None
    if frozen is None or not frozen.access_key or not frozen.secret_key:
        raise ConfigurationError(
            "aws_iam",
            "no AWS credentials found (environment, shared config/credentials files, container endpoint "
            "or EC2 instance profile)",
        )
    now = time.time()
    expires_at = now + _PROOF_LIFETIME
    expiry = getattr(credentials, "_expiry_time", None)  # RefreshableCredentials (instance profile, container)
    if expiry is not None:
        expires_at = min(expires_at, calendar.timegm(expiry.utctimetuple()))
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Host": _host_header(endpoint)}
    if audience is not None:
        headers[AUDIENCE_HEADER] = audience
    request = AWSRequest(method="POST", url=endpoint, data=_BODY.encode(), headers=headers)
    SigV4Auth(frozen, "sts", region).add_auth(request)
    payload = {"method": "POST", "url": endpoint, "headers": dict(request.headers.items()), "body": _BODY}
    encoded = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).rstrip(b"=")
    return AwsProof(token=TOKEN_PREFIX + encoded.decode("ascii"), expires_at=expires_at)


def _decode(token: str) -> tuple[dict[str, tuple[str, str]], str]:
    """The proof's headers (lower-cased name -> (name, value)) and body; Refused when malformed."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN:
        raise Refused(_MALFORMED)
    raw = token[len(TOKEN_PREFIX) :]
    try:
        proof = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        raise Refused(_MALFORMED) from None
    if not isinstance(proof, dict) or proof.get("method") != "POST" or not isinstance(proof.get("url"), str):
        raise Refused(_MALFORMED)
    body, headers = proof.get("body"), proof.get("headers")
    if not isinstance(body, str) or not isinstance(headers, dict):
        raise Refused(_MALFORMED)
    try:
        query = parse_qs(body, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise Refused(_MALFORMED) from None
    if query != _QUERY:
        raise Refused(_MALFORMED)
    by_name: dict[str, tuple[str, str]] = {}
    for name, value in headers.items():
        if (
            not isinstance(value, str)
            or name.lower() in by_name
            or not _NAME.fullmatch(name)
            or not _VALUE.fullmatch(value)
        ):
            raise Refused(_MALFORMED)
        by_name[name.lower()] = (name, value)
    return by_name, body


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(element: ET.Element, *path: str) -> str | None:
    for name in path:
        found = next((child for child in element if _local(child.tag) == name), None)
        if found is None:
            return None
        element = found
    return (element.text or "").strip() or None


def _role_arn(arn: str) -> str:
    m = re.fullmatch(r"arn:([\w-]+):sts::(\d{12}):assumed-role/([\w+=,.@-]+)/[\w+=,.@-]+", arn)
    return f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}" if m else arn


class AwsIamVerifier:
    """Verifies ``aws-iam:`` proofs by forwarding them to the configured STS endpoint (never the token's URL)."""

    def __init__(
        self,
        *,
        sts_endpoint: str = "https://sts.amazonaws.com",
        audience: str | None = None,
        max_age: float = 900.0,
        timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = require_https("sts_endpoint", sts_endpoint)
        self._parts = parts
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.issuer = parts.hostname or ""  # require_https checked there is one
        self._audience = audience
        self._max_age = max_age
        self._timeout = timeout
        self._ssl = ssl_context or ssl.create_default_context()
        self._clock = clock

    def verify(self, token: str) -> Identity:
        headers, body = _decode(token)
        forward = self._check(headers)
        status, answer = self._post(forward, body.encode())
        return self._identity(status, answer)

    def _check(self, headers: dict[str, tuple[str, str]]) -> dict[str, str]:
        """Checks the signed request's shape; returns the headers to forward."""
        m = _AUTH.fullmatch(headers.get("authorization", ("", ""))[1])
        if m is None:
            raise Refused(_MALFORMED)
        scope = m.group("cred").split("/")
        if len(scope) != 5 or scope[3] != "sts" or scope[4] != "aws4_request":
            raise Refused(_MALFORMED)
        signed = m.group("signed").split(";")
        if "host" not in signed or "x-amz-date" not in signed or any(h not in headers for h in signed):
            raise Refused(_MALFORMED)
        if self._audience is not None:
            if AUDIENCE_HEADER.lower() not in headers:
                raise Refused("AWS proof has no audience")
            if headers[AUDIENCE_HEADER.lower()][1] != self._audience:
                raise Refused("AWS proof audience mismatch")
            if AUDIENCE_HEADER.lower() not in signed:
                raise Refused("AWS proof audience not signed")
        try:
            signed_at = calendar.timegm(time.strptime(headers["x-amz-date"][1], "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise Refused(_MALFORMED) from None
        now = self._clock()
        if now - signed_at > self._max_age:
            raise Refused("AWS proof expired")
        if signed_at - now > _FUTURE_SKEW:
            raise Refused("AWS proof dated in the future")
        wanted = set(signed) | {"authorization", "x-amz-security-token", "content-type"}
        return {name: value for key, (name, value) in headers.items() if key in wanted}

    def _post(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        host, port = self._parts.hostname or "", self._parts.port
        conn: http.client.HTTPConnection
        if self._parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self._timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(_MAX_RESPONSE + 1)
        except (OSError, http.client.HTTPException):  # ssl.SSLCertVerificationError is an OSError too
            raise Refused("STS unreachable") from None
        finally:
            conn.close()

    def _identity(self, status: int, answer: bytes) -> Identity:
        try:
            # the configured STS's answer, size-capped; ElementTree resolves no external entities and the
            # bundled expat (>= 2.4.1) refuses entity-expansion bombs
            root = ET.fromstring(answer) if len(answer) <= _MAX_RESPONSE else None  # noqa: S314
        except ET.ParseError:
            root = None
        if status != 200:
            code = _find(root, "Error", "Code") if root is not None and _local(root.tag) == "ErrorResponse" else None
            if code and re.fullmatch(r"[A-Za-z0-9.]{1,64}", code):
                raise Refused(f"STS refused: {code}")
            raise Refused(f"STS refused: HTTP {status}")
        if root is None or _local(root.tag) != "GetCallerIdentityResponse":
            raise Refused("malformed STS response")
        arn = _find(root, "GetCallerIdentityResult", "Arn")
        account = _find(root, "GetCallerIdentityResult", "Account")
        user_id = _find(root, "GetCallerIdentityResult", "UserId")
        if not arn or not account or not user_id:
            raise Refused("malformed STS response")
        claims = {"account": account, "arn": arn, "role_arn": _role_arn(arn), "user_id": user_id}
        return Identity(kind="aws_iam", issuer=self.issuer, subject=arn, expires_at=None, claims=claims)
