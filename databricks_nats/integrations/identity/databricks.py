"""Verify a Databricks identity by asking its workspace who the token belongs to (token introspection).

Why: ``oidc_token = "databricks"`` presents the token the Databricks SDK authenticates with. On a job cluster or
serverless that is the runtime's native auth, not necessarily an OAuth JWT the workspace's ``/oidc`` keys
verify; a personal access token (``dapi…``) is no JWT at all. As Vault's AWS auth does with STS, the service
then asks the one party that can tell: the workspace itself.

The proof (``encode_proof``, sent by the client): ``databricks:`` + base64url(JSON ``{"host": "https://<workspace
host>", "token": "<bearer token>"}``). ``DatabricksVerifier.verify(proof)``:

1. decodes the envelope ("malformed Databricks proof");
2. finds the host among the configured ``DatabricksWorkspace`` s ("workspace not trusted"). Only configured
   hosts are ever called, at the configured URL — a client cannot make the service call anywhere else (no
   SSRF), and redirects are never followed (they would carry the token elsewhere);
3. an OAuth JWT of that workspace (``iss`` = ``<host>/oidc``) whose issuer the given ``OidcVerifier`` trusts
   is verified offline, as OIDC (its ``Identity`` is ``kind = "oidc"``, as when a client presents the JWT
   itself); anything else is introspected:
4. ``GET <host>/api/2.0/preview/scim/v2/Me`` with ``Authorization: Bearer <token>`` (SCIM "get current user").
   401/403 → "Databricks refused the token"; no answer → "Databricks unreachable". The answer becomes
   ``Identity(kind="databricks", issuer=<host>, subject=<applicationId of a service principal, else userName>,
   expires_at=None)`` with claims ``user_name``, ``application_id``, ``id``, ``display_name``, ``groups`` (the
   groups' display names), ``workspace_id`` (configured, or None) and ``host`` — what policy rules match on.

Successful introspections are cached for ``cache_ttl`` seconds (never beyond an inner JWT's own ``exp``),
keyed by a SHA-256 of host and token — the token itself is never kept — in a bounded LRU: a revoked token is
accepted for at most ``cache_ttl`` more seconds. Refusals are not cached. Reasons are fixed strings, free of
token material. Standard library only (urllib); the OIDC path needs PyJWT, through ``oidc.py``.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import http.client
import json
import logging
import math
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.identity.identity import Identity, Refused
from databricks_nats.integrations.identity.oidc import OidcVerifier
from databricks_nats.integrations.identity.unverified import jwt_claims
from databricks_nats.integrations.identity.urls import require_https

__all__ = [
    "DATABRICKS_PREFIX",
    "DatabricksVerifier",
    "DatabricksWorkspace",
    "decode_proof",
    "encode_proof",
    "normalise_host",
]

log = logging.getLogger(__name__)

DATABRICKS_PREFIX = "databricks:"
ME_PATH = "/api/2.0/preview/scim/v2/Me"
_MAX_PROOF = 32 * 1024  # characters; a bearer token is a few KiB at most
_MAX_BODY = 1024 * 1024
_MALFORMED = "malformed Databricks proof"
_UNEXPECTED = "unexpected answer from Databricks"


def normalise_host(host: str) -> str:
    """``https://host[:port]``: a scheme added when missing (https), lower case, no path or trailing slash."""
    text = host.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urllib.parse.urlsplit(text)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def encode_proof(host: str, token: str) -> str:
    """What the client presents: ``databricks:`` + base64url(JSON {"host", "token"}), unpadded."""
    body = json.dumps({"host": normalise_host(host), "token": token}, separators=(",", ":")).encode()
    return DATABRICKS_PREFIX + base64.urlsafe_b64encode(body).decode("ascii").rstrip("=")


def decode_proof(proof: str) -> tuple[str, str]:
    if not isinstance(proof, str) or not proof.startswith(DATABRICKS_PREFIX) or len(proof) > _MAX_PROOF:
        raise Refused(_MALFORMED)
    data = proof[len(DATABRICKS_PREFIX) :]
    try:
        envelope = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    except (binascii.Error, ValueError):
        raise Refused(_MALFORMED) from None
    if not isinstance(envelope, dict):
        raise Refused(_MALFORMED)
    host, token = envelope.get("host"), envelope.get("token")
    if not isinstance(host, str) or not host or not isinstance(token, str) or not token:
        raise Refused(_MALFORMED)
    if any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E for c in token):
        raise Refused(_MALFORMED)  # it goes into an HTTP header: printable ASCII only
    return host, token


@dataclass(frozen=True)
class DatabricksWorkspace:
    """A trusted workspace: its URL (https, http for loopback only) and, optionally, its numeric id."""

    host: str
    workspace_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ConfigurationError("databricks.host", "must be a non-empty workspace URL")
        raw = self.host.strip() if "://" in self.host else "https://" + self.host.strip()
        parts = urllib.parse.urlsplit(raw)
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigurationError("databricks.host", "must be a workspace URL without path, query or user")
        require_https("databricks.host", raw)
        object.__setattr__(self, "host", normalise_host(raw))
        if self.workspace_id is not None:
            if isinstance(self.workspace_id, bool) or not isinstance(self.workspace_id, (str, int)):
                raise ConfigurationError("databricks.workspace_id", "must be a string")
            value = str(self.workspace_id).strip()
            if not value:
                raise ConfigurationError("databricks.workspace_id", "must not be empty")
            object.__setattr__(self, "workspace_id", value)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following it would send the bearer token to another URL."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class DatabricksVerifier:
    """Verifies ``databricks:`` proofs against the configured workspaces (see the module docstring); thread-safe."""

    def __init__(
        self,
        workspaces: Sequence[DatabricksWorkspace],
        *,
        oidc: OidcVerifier | None = None,
        timeout: float = 5.0,
        cache_ttl: float = 60.0,
        cache_size: int = 4096,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not workspaces:
            raise ConfigurationError("databricks", "at least one workspace is required")
        by_host: dict[str, DatabricksWorkspace] = {}
        for workspace in workspaces:
            if not isinstance(workspace, DatabricksWorkspace):
                raise ConfigurationError("databricks", "workspaces must be DatabricksWorkspace values")
            if workspace.host in by_host:
                raise ConfigurationError("databricks", f"workspace {workspace.host!r} is listed twice")
            by_host[workspace.host] = workspace
        if not math.isfinite(timeout) or timeout <= 0:
            raise ConfigurationError("databricks.timeout", "must be a positive number of seconds")
        if not math.isfinite(cache_ttl) or cache_ttl < 0:
            raise ConfigurationError("databricks.cache_ttl", "must be a number of seconds >= 0")
        if cache_size < 1:
            raise ConfigurationError("databricks.cache_size", "must be at least 1")
        self._workspaces = by_host
        self._oidc = oidc
        self._timeout = float(timeout)
        self._cache_ttl = float(cache_ttl)
        self._cache_size = int(cache_size)
        self._clock = clock
        self._cache: collections.OrderedDict[str, tuple[float, Identity]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=ssl_context))

    @property
    def workspaces(self) -> tuple[DatabricksWorkspace, ...]:
        return tuple(self._workspaces.values())

    def verify(self, proof: str) -> Identity:
        """The identity a valid proof shows; ``Refused(reason)`` otherwise."""
        host, token = decode_proof(proof)
        workspace = self._workspaces.get(normalise_host(host))
        if workspace is None:
            raise Refused("workspace not trusted")
        claims = jwt_claims(token) or {}
        if self._oidc is not None and claims.get("iss") == workspace.host + "/oidc":
            try:
                return self._oidc.verify(token)
            except Refused as e:
                if e.reason != "unknown issuer":  # not an issuer the OIDC verifier trusts: introspect instead
                    raise
        return self._introspect(workspace, token, claims)

    def _introspect(self, workspace: DatabricksWorkspace, token: str, claims: Mapping[str, Any]) -> Identity:
        key = hashlib.sha256(f"{workspace.host}\n{token}".encode()).hexdigest()
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                if hit[0] > now:
                    self._cache.move_to_end(key)
                    return hit[1]
                del self._cache[key]
        identity = _identity(workspace, self._me(workspace, token))
        until = now + self._cache_ttl
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and not isinstance(exp, bool):
            until = min(until, float(exp))  # never trust a cached JWT beyond its own expiry
        if until > now:
            with self._lock:
                self._cache[key] = (until, identity)
                self._cache.move_to_end(key)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return identity

    def _me(self, workspace: DatabricksWorkspace, token: str) -> Mapping[str, Any]:
        url = workspace.host + ME_PATH
        request = urllib.request.Request(  # noqa: S310 - a configured, checked workspace URL
            url, headers={"Authorization": f"Bearer {token}", "Accept": "application/scim+json, application/json"}
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                body = response.read(_MAX_BODY + 1)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in (401, 403):
                raise Refused("Databricks refused the token") from None
            log.warning("Databricks workspace %s: GET %s answered HTTP %d", workspace.host, ME_PATH, e.code)
            raise Refused(_UNEXPECTED) from None
        except (OSError, ValueError, http.client.HTTPException) as e:
            log.warning("Databricks workspace %s unreachable: %s", workspace.host, type(e).__name__)
            raise Refused("Databricks unreachable") from None
        if len(body) > _MAX_BODY:
            raise Refused(_UNEXPECTED)
        try:
            document = json.loads(body)
        except ValueError:
            raise Refused(_UNEXPECTED) from None
        if not isinstance(document, dict):
            raise Refused(_UNEXPECTED)
        return document


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _identity(workspace: DatabricksWorkspace, me: Mapping[str, Any]) -> Identity:
    """The SCIM ``Me`` answer as an ``Identity``."""
    if me.get("active") is False:
        raise Refused("Databricks identity is inactive")
    user_name, application_id = _text(me.get("userName")), _text(me.get("applicationId"))
    subject = application_id or user_name
    if subject is None:
        raise Refused(_UNEXPECTED)
    raw_groups = me.get("groups")
    groups = (
        [g["display"] for g in raw_groups if isinstance(g, dict) and _text(g.get("display"))]
        if isinstance(raw_groups, list)
        else []
    )
    claims = {
        "user_name": user_name,
        "application_id": application_id,
        "id": _text(me.get("id")),
        "display_name": _text(me.get("displayName")),
        "groups": groups,
        "workspace_id": workspace.workspace_id,
        "host": workspace.host,
    }
    return Identity(kind="databricks", issuer=workspace.host, subject=subject, expires_at=None, claims=claims)
