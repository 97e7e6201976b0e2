"""Loopback stand-ins for AWS STS and the EC2 instance metadata service, at their documented HTTP endpoints.

``StsStub`` answers STS's query API for ``GetCallerIdentity`` (form-encoded POST) the way STS does: it
recomputes the SigV4 signature with botocore from the headers the request lists in ``SignedHeaders`` and the
secret of the access key, and answers the documented ``GetCallerIdentityResponse`` XML, or an
``ErrorResponse`` with 403: ``InvalidClientTokenId`` (unknown key, wrong session token),
``SignatureDoesNotMatch`` (wrong signature; also "Signature expired" for a date older than 15 minutes, as STS
says it), ``ExpiredToken`` (the key's temporary credentials were expired with ``expire()``). It counts
requests and keeps the header names of the last one.

``ImdsStub`` serves IMDSv2 (``PUT /latest/api/token``, then ``GET /latest/meta-data/iam/security-credentials/``
and ``.../<role>`` with the token) and the container credentials endpoint (``GET /container-credentials``,
what ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` points at), so botocore's own providers fetch credentials from it.
"""

from __future__ import annotations

import calendar
import hmac
import json
import secrets
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["ImdsStub", "StsStub"]

_NS = "https://sts.amazonaws.com/doc/2011-06-15/"


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 running in a thread; a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.stub = self  # type: ignore[attr-defined]
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StsStub(_Server):
    """``identities``: access key -> (secret, session token or None, arn, account, user id); ``tls``: serve https."""

    def __init__(
        self,
        identities: dict[str, tuple[str, str | None, str, str, str]],
        *,
        clock: Any = time.time,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(_StsHandler, tls)
        self.identities = dict(identities)
        self.clock = clock
        self.requests = 0
        self.last_headers: list[str] = []
        self.expired: set[str] = set()

    def expire(self, access_key: str) -> None:
        """From now on the key's temporary credentials are expired (STS answers ExpiredToken)."""
        self.expired.add(access_key)

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        if method != "POST" or parse_qs(body.decode()) != {"Action": ["GetCallerIdentity"], "Version": ["2011-06-15"]}:
            return 400, _error("Sender", "InvalidAction", "Could not find operation")
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            algorithm, rest = lower["authorization"].split(" ", 1)
            fields = dict(part.strip().split("=", 1) for part in rest.split(","))
            access_key, _day, region, service, _ = fields["Credential"].split("/")
            signed, signature, amz_date = fields["SignedHeaders"].split(";"), fields["Signature"], lower["x-amz-date"]
        except (KeyError, ValueError):
            return 400, _error("Sender", "IncompleteSignature", "The request signature does not conform")
        known = self.identities.get(access_key)
        if algorithm != "AWS4-HMAC-SHA256" or known is None:
            return 403, _error(
                "Sender", "InvalidClientTokenId", "The security token included in the request is invalid."
            )
        secret, session_token, arn, account, user_id = known
        if session_token is not None and lower.get("x-amz-security-token") != session_token:
            return 403, _error(
                "Sender", "InvalidClientTokenId", "The security token included in the request is invalid."
            )
        request = AWSRequest(
            method=method,
            url=f"https://{lower.get('host', '')}{path}",
            data=body,
            headers={name: lower[name] for name in signed if name in lower},
        )
        request.context["timestamp"] = amz_date
        auth = SigV4Auth(Credentials(access_key, secret, session_token), service, region)
        expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
        if any(name not in lower for name in signed) or not hmac.compare_digest(expected, signature):
            return 403, _error("Sender", "SignatureDoesNotMatch", "The request signature we calculated does not match")
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        if self.clock() - signed_at > 900:
            return 403, _error("Sender", "SignatureDoesNotMatch", f"Signature expired: {amz_date} is now earlier than")
        if access_key in self.expired:
            return 403, _error("Sender", "ExpiredToken", "The security token included in the request is expired")
        return 200, (
            f'<GetCallerIdentityResponse xmlns="{_NS}"><GetCallerIdentityResult><Arn>{arn}</Arn>'
            f"<UserId>{user_id}</UserId><Account>{account}</Account></GetCallerIdentityResult>"
            f"<ResponseMetadata><RequestId>{secrets.token_hex(8)}</RequestId></ResponseMetadata>"
            "</GetCallerIdentityResponse>"
        )


def _error(kind: str, code: str, message: str) -> str:
    return (
        f'<ErrorResponse xmlns="{_NS}"><Error><Type>{kind}</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>{secrets.token_hex(8)}</RequestId></ErrorResponse>"
    )


class _StsHandler(_Handler):
    def do_POST(self) -> None:
        stub: StsStub = self.server.stub  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        stub.requests += 1
        stub.last_headers = [name.lower() for name in self.headers]
        status, xml = stub.answer("POST", self.path, dict(self.headers.items()), body)
        self._send(status, xml.encode(), "text/xml")


class ImdsStub(_Server):
    """One role's credentials, served by IMDSv2 and by the container credentials endpoint."""

    def __init__(self, role: str, access_key: str, secret: str, token: str, expiration: float) -> None:
        super().__init__(_ImdsHandler)
        self.role = role
        self.credentials = {
            "Code": "Success",
            "LastUpdated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "Type": "AWS-HMAC",
            "AccessKeyId": access_key,
            "SecretAccessKey": secret,
            "Token": token,
            "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiration)),
        }
        self.imds_token = secrets.token_urlsafe(16)
        self.served = 0

    @property
    def container_url(self) -> str:
        return f"{self.url}/container-credentials"


class _ImdsHandler(_Handler):
    def do_PUT(self) -> None:
        stub: ImdsStub = self.server.stub  # type: ignore[attr-defined]
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self._send(200, stub.imds_token.encode(), "text/plain")
        else:
            self._send(400, b"", "text/plain")

    def do_GET(self) -> None:
        stub: ImdsStub = self.server.stub  # type: ignore[attr-defined]
        prefix = "/latest/meta-data/iam/security-credentials/"
        if self.path == "/container-credentials":
            stub.served += 1
            self._send(200, json.dumps(stub.credentials).encode(), "application/json")
        elif self.headers.get("X-aws-ec2-metadata-token") != stub.imds_token:
            self._send(401, b"", "text/plain")
        elif self.path == prefix:
            self._send(200, stub.role.encode(), "text/plain")
        elif self.path == prefix + stub.role:
            stub.served += 1
            self._send(200, json.dumps(stub.credentials).encode(), "application/json")
        else:
            self._send(404, b"", "text/plain")
