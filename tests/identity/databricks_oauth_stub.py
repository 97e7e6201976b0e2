"""A loopback Databricks workspace for OAuth M2M: the endpoints the real ``databricks-sdk`` calls for a service
principal (``DATABRICKS_HOST``, ``DATABRICKS_CLIENT_ID``, ``DATABRICKS_CLIENT_SECRET``), and the OIDC discovery
and key set our auth-callout service reads, so that this one server is the issuer the service trusts.

What databricks-sdk 0.162 requests (``config.py``, ``credentials_provider.oauth_service_principal``,
``oauth.py``), in order:

1. ``GET {host}/.well-known/databricks-config`` (``Config._resolve_host_metadata``, at ``Config()``): the
   host's metadata; its ``oidc_endpoint`` becomes ``discovery_url = {oidc_endpoint}/.well-known/
   oauth-authorization-server``. In this SDK version OAuth M2M needs it (or ``DATABRICKS_DISCOVERY_URL``):
   ``databricks_oidc_endpoints`` reads ``discovery_url`` only. Served as ``{"oidc_endpoint": "{host}/oidc",
   "workspace_id": ...}`` (``oauth.HostMetadata``); ``host_metadata=False`` answers 404 instead.
2. ``GET {host}/oidc/.well-known/oauth-authorization-server`` (RFC 8414; ``oauth.OidcEndpoints``:
   ``authorization_endpoint``, ``token_endpoint``).
3. ``POST {host}/oidc/v1/token`` at the first ``authenticate()`` and before the token runs out: form body
   ``grant_type=client_credentials&scope=all-apis``, the client id and secret in HTTP Basic auth
   (``ClientCredentials(use_header=True)``). Answer: ``{"access_token", "token_type": "Bearer",
   "expires_in", "scope"}``; wrong credentials: 401 ``{"error": "invalid_client", ...}`` (RFC 6749 §5.2; the SDK
   raises ``ValueError``).

The OIDC side, as a workspace documents it: ``GET {host}/oidc/.well-known/openid-configuration`` (``issuer`` =
``{host}/oidc``, ``jwks_uri`` = ``{host}/oidc/jwks.json``) and the JWK Set there.

The access token is an RS256 JWT (PyJWT; an RSA key made here with ``cryptography``): ``iss = {host}/oidc``,
``sub`` = the client id (a service principal's application id), ``client_id``, ``scope``, ``iat`` and
``exp = iat + expires_in``. ``aud``: Databricks does not document its access tokens' audience as a contract; the
stub uses the client id (what an OAuth client-credentials token without a ``resource`` names), or ``audience``
when given — the service's ``OidcIssuer.audiences`` must name it, as the oidc module's docs tell an operator to
read it off a decoded token. Counters: ``token_requests`` (all), ``tokens_issued``, ``token_refusals``; every
path asked for lands in ``paths``; ``tokens`` holds every token minted (tests grep logs and events for them).

Token introspection (what the auth service asks for a ``databricks:`` proof): ``GET {host}/api/2.0/preview/
scim/v2/Me`` with ``Authorization: Bearer <token>`` — the SCIM "get current user" of the workspace API, for
any token the workspace accepts (a PAT, a runtime's native token, an OAuth token). ``principals`` maps a bearer
token to the SCIM resource it belongs to (``user()`` / ``service_principal()`` build them as Databricks does:
``schemas``, ``id``, ``userName``, ``displayName``, ``active``, ``groups`` as ``{"display", "value", "type",
"$ref"}``; a service principal also has ``applicationId``); a minted OAuth token belongs to its client's service
principal. ``forbidden`` tokens answer 403, unknown ones 401, both in Databricks' REST error JSON
(``{"error_code", "message"}``). Counters: ``me_requests``, ``me_refusals``.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import uuid
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["DatabricksOAuthStub", "service_principal", "user"]


class DatabricksOAuthStub:
    """A workspace's OAuth endpoints on ``http://127.0.0.1:<port>``; use as a context manager."""

    def __init__(
        self,
        clients: dict[str, str],
        *,
        audience: str | None = None,
        expires_in: int = 3600,
        workspace_id: str = "1234567890123456",
        host_metadata: bool = True,
        principals: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.clients = dict(clients)  # client id (service principal application id) -> secret
        self.audience = audience
        self.expires_in = expires_in
        self.workspace_id = workspace_id
        self.host_metadata = host_metadata
        self.kid = f"dbx-{uuid.uuid4().hex[:8]}"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._lock = threading.Lock()
        self.token_requests = 0
        self.tokens_issued = 0
        self.token_refusals = 0
        self.paths: list[str] = []
        self.tokens: list[str] = []
        self.principals: dict[str, dict[str, Any]] = dict(principals or {})  # bearer token -> SCIM Me resource
        self.forbidden: set[str] = set()  # tokens answered 403 (authenticated, not allowed)
        self.me_requests = 0
        self.me_refusals = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- URLs ---------------------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        """``DATABRICKS_HOST``."""
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        """The ``iss`` of the tokens (a workspace's issuer: ``https://<workspace-host>/oidc``)."""
        return self.host + "/oidc"

    # -- documents ----------------------------------------------------------------------------------------
    def oauth_metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/v1/authorize",
            "token_endpoint": self.issuer + "/v1/token",
            "jwks_uri": self.issuer + "/jwks.json",
            "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["all-apis", "offline_access", "sql"],
        }

    def openid_configuration(self) -> dict[str, Any]:
        return {
            **self.oauth_metadata(),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def jwks(self) -> dict[str, Any]:
        from jwt.algorithms import RSAAlgorithm

        jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return {"keys": [jwk]}

    def mint(self, client_id: str, scope: str) -> str:
        import jwt

        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": client_id,
            "aud": self.audience or client_id,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + self.expires_in,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "at+jwt"})
        with self._lock:
            self.tokens.append(token)
            self.principals[token] = service_principal(client_id)
        return token

    def me_response(self, authorization: str) -> tuple[int, dict[str, Any]]:
        """``GET /api/2.0/preview/scim/v2/Me``: the principal the bearer token belongs to."""
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            self.me_requests += 1
            known = self.principals.get(token) if scheme.lower() == "bearer" else None
            if known is not None and token in self.forbidden:
                self.me_refusals += 1
                return 403, {"error_code": "PERMISSION_DENIED", "message": "User is not allowed to call this API"}
            if known is None:
                self.me_refusals += 1
                return 401, {"error_code": "UNAUTHENTICATED", "message": "Invalid access token."}
        return 200, known

    def _client(self, authorization: str, form: dict[str, list[str]]) -> str | None:
        """The client id when HTTP Basic (or ``client_id``/``client_secret`` in the form) names a known client
        with its secret, else None."""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
        else:
            client_id = (form.get("client_id") or [""])[0]
            secret = (form.get("client_secret") or [""])[0]
        known = self.clients.get(client_id)
        return client_id if known is not None and secret == known else None

    def token_response(self, authorization: str, body: str) -> tuple[int, dict[str, Any]]:
        form = parse_qs(body)
        with self._lock:
            self.token_requests += 1
        if (form.get("grant_type") or [""])[0] != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "grant_type not supported"}
        client_id = self._client(authorization, form)
        if client_id is None:
            with self._lock:
                self.token_refusals += 1
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        scope = (form.get("scope") or ["all-apis"])[0]
        token = self.mint(client_id, scope)
        with self._lock:
            self.tokens_issued += 1
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in, "scope": scope}

    # -- HTTP ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with stub._lock:
                    stub.paths.append(f"GET {path}")
                documents = {
                    "/oidc/.well-known/oauth-authorization-server": stub.oauth_metadata,
                    "/oidc/.well-known/openid-configuration": stub.openid_configuration,
                    "/oidc/jwks.json": stub.jwks,
                }
                if path == "/api/2.0/preview/scim/v2/Me":
                    self._send(*stub.me_response(self.headers.get("Authorization", "")))
                elif path == "/.well-known/databricks-config" and stub.host_metadata:
                    self._send(200, {"oidc_endpoint": stub.issuer, "workspace_id": stub.workspace_id})
                elif path in documents:
                    self._send(200, documents[path]())
                else:
                    self._send(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for {path}"})

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                with stub._lock:
                    stub.paths.append(f"POST {path}")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
                if path != "/oidc/v1/token":
                    self._send(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for {path}"})
                    return
                self._send(*stub.token_response(self.headers.get("Authorization", ""), body))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="dbx-oauth-stub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> DatabricksOAuthStub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _groups(names: Sequence[str]) -> list[dict[str, str]]:
    out = []
    for name in names:
        gid = str(uuid.uuid5(uuid.NAMESPACE_OID, name).int % 10**15)
        out.append({"display": name, "value": gid, "type": "direct", "$ref": f"Groups/{gid}"})
    return out


def user(user_name: str, groups: Sequence[str] = (), *, display_name: str | None = None) -> dict[str, Any]:
    """A workspace user as SCIM ``Me`` returns it."""
    return {
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:workspace:2.0:User",
        ],
        "id": str(uuid.uuid4().int % 10**16),
        "userName": user_name,
        "displayName": display_name or user_name.split("@")[0],
        "active": True,
        "emails": [{"type": "work", "value": user_name, "primary": True}],
        "groups": _groups(groups),
    }


def service_principal(
    application_id: str, groups: Sequence[str] = (), *, display_name: str = "bundle-sp"
) -> dict[str, Any]:
    """A service principal as SCIM ``Me`` returns it: ``applicationId``, and its application id as ``userName``."""
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal"],
        "id": str(uuid.uuid4().int % 10**16),
        "applicationId": application_id,
        "userName": application_id,
        "displayName": display_name,
        "active": True,
        "groups": _groups(groups),
    }
