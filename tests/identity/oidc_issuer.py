"""A loopback OIDC issuer for the tests: real HTTP on 127.0.0.1, the documented endpoints only.

``OidcIssuerStub`` serves ``/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0: ``issuer``,
``jwks_uri``, ...) and ``/jwks`` (RFC 7517 JWK Set of the public keys) from an ``http.server`` in a thread,
counts the fetches of each, and mints tokens with PyJWT using keys generated here with ``cryptography``
(RSA 2048 for RS256, EC P-256 for ES256). ``rotate()`` publishes a new key and signs with it from then on.
The attacks are minted here too: a forged token (a key not in the JWKS, a published kid), ``alg: none``, and
HS256 keyed with the issuer's public key (the algorithm-confusion attack).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = ["OidcIssuerStub", "new_key"]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_key(alg: str = "RS256") -> PrivateKey:
    """A fresh private key for ``alg`` (RS256: RSA 2048, ES256: EC P-256)."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"the stub signs RS256 or ES256, not {alg}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class OidcIssuerStub:
    """A real OIDC issuer on loopback. ``url`` is the issuer (``iss``); use as a context manager."""

    def __init__(self, *, discovery_issuer: str | None = None) -> None:
        self._lock = threading.Lock()
        self._serial = itertools.count(1)
        self._keys: dict[str, tuple[str, PrivateKey]] = {}  # kid -> (alg, private key), published in the JWKS
        self._signing: dict[str, str] = {}  # alg -> kid that signs
        self._discovery_issuer = discovery_issuer
        self.discovery_fetches = 0
        self.jwks_fetches = 0
        self.jwks_delay = 0.0  # seconds the JWKS answer takes (lets concurrent callers pile up behind a fetch)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        for alg in ("RS256", "ES256"):
            self.rotate(alg)

    # -- keys ---------------------------------------------------------------------------------------------
    def rotate(self, alg: str = "RS256") -> str:
        """Publish a new key (new kid) for ``alg`` and sign with it from now on; returns the kid."""
        kid = f"{alg.lower()}-{next(self._serial)}"
        with self._lock:
            self._keys[kid] = (alg, new_key(alg))
            self._signing[alg] = kid
        return kid

    def retire(self, kid: str) -> None:
        """Stop publishing ``kid`` (a revoked key)."""
        with self._lock:
            del self._keys[kid]

    def signing_kid(self, alg: str = "RS256") -> str:
        return self._signing[alg]

    def public_pem(self, alg: str = "RS256") -> bytes:
        """The PEM of the signing key's public half (what an attacker can download)."""
        _alg, key = self._keys[self._signing[alg]]
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            keys = list(self._keys.items())
        out = []
        for kid, (alg, key) in keys:
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            else:
                jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
            jwk.update(kid=kid, use="sig", alg=alg)
            out.append(jwk)
        return {"keys": out}

    # -- tokens -------------------------------------------------------------------------------------------
    def claims(
        self,
        *,
        sub: str | None = "svc-1",
        aud: str | list[str] | None = "nats-auth",
        exp_in: float | None = 300,
        nbf_in: float | None = None,
        iss: str | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A payload; a claim given as None is left out."""
        now = int(time.time())
        payload: dict[str, Any] = {"iss": iss or self.url, "iat": now}
        if sub is not None:
            payload["sub"] = sub
        if aud is not None:
            payload["aud"] = aud
        if exp_in is not None:
            payload["exp"] = now + int(exp_in)
        if nbf_in is not None:
            payload["nbf"] = now + int(nbf_in)
        payload.update(extra_claims or {})
        return {name: value for name, value in payload.items() if value is not None}

    def mint(
        self,
        sub: str | None = "svc-1",
        aud: str | list[str] | None = "nats-auth",
        exp_in: float | None = 300,
        nbf_in: float | None = None,
        kid: str | None = None,
        alg: str = "RS256",
        extra_claims: Mapping[str, Any] | None = None,
        key: PrivateKey | None = None,
        iss: str | None = None,
    ) -> str:
        """A token signed by the current ``alg`` key (or ``key``), with header ``kid`` (default: that key's)."""
        payload = self.claims(sub=sub, aud=aud, exp_in=exp_in, nbf_in=nbf_in, iss=iss, extra_claims=extra_claims)
        signing_kid = self._signing[alg]
        if key is None:
            key = self._keys[signing_kid][1]
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid or signing_kid})

    def forge(self, alg: str = "RS256", **claims: Any) -> str:
        """Signed with a key that is not in the JWKS, under the kid of a published one."""
        return self.mint(alg=alg, key=new_key(alg), **claims)

    def mint_none(self, **claims: Any) -> str:
        """``alg: none``, no signature, the published kid in the header."""
        header = {"alg": "none", "typ": "JWT", "kid": self._signing["RS256"]}
        parts = (json.dumps(header).encode(), json.dumps(self.claims(**claims)).encode())
        return ".".join(_b64(p) for p in parts) + "."

    def mint_hs256_with_public_key(self, **claims: Any) -> str:
        """HS256 with the RSA public key's PEM as the HMAC secret (PyJWT refuses to, so by hand)."""
        header = {"alg": "HS256", "typ": "JWT", "kid": self._signing["RS256"]}
        signing_input = ".".join(
            _b64(p) for p in (json.dumps(header).encode(), json.dumps(self.claims(**claims)).encode())
        )
        mac = hmac.new(self.public_pem(), signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"

    # -- HTTP ---------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The issuer (``iss``): ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def jwks_uri(self) -> str:
        return self.url + "/jwks"

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self._discovery_issuer or self.url,
            "jwks_uri": self.jwks_uri,
            "authorization_endpoint": self.url + "/authorize",
            "token_endpoint": self.url + "/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }

    def start(self) -> None:
        """Serve (again) on the same port once one was assigned."""
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    with stub._lock:
                        stub.discovery_fetches += 1
                    body = stub.discovery()
                elif self.path == "/jwks":
                    with stub._lock:
                        stub.jwks_fetches += 1
                    time.sleep(stub.jwks_delay)
                    body = stub.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        server.daemon_threads = True
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="oidc-issuer-stub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the port (connections are refused until ``start()``)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> OidcIssuerStub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
