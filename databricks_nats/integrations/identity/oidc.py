"""Verify OIDC JWTs (the token a client presents to the auth-callout service) against the issuer's JWKS.

Design
------
One ``OidcIssuer`` per trusted issuer (exact ``iss``, the audiences we accept, the asymmetric algorithms it signs
with). ``OidcVerifier.verify(token)``:

1. reads the unverified header and payload (PyJWT) only to *route*: the exact ``iss`` picks the issuer (none →
   ``"unknown issuer"``), the header ``alg`` must be one of that issuer's algorithms (``"algorithm not allowed"``:
   this is where ``alg: none`` and the HS256-with-the-public-key confusion die, before any key is touched);
2. finds the key by ``kid`` in the issuer's cached JWKS (fetched from ``jwks_uri`` of the discovery document);
3. verifies signature, ``iss``, ``aud``, ``exp``, ``nbf`` (and ``iat``) with ``jwt.decode`` and a ``jwt.PyJWK``
   bound to the header's (allowed) algorithm, requiring ``exp``, ``iss``, ``sub`` and ``aud``.

Keys are cached per issuer. The cache is refreshed when it is older than ``cache_ttl`` (on next use) and once
when a token names an unknown ``kid`` (the issuer rotated its keys). Every fetch of an issuer, successful or
not, is rate-limited to one per ``min_refresh_interval``: a flood of tokens with random ``kid`` values, or an
issuer that is down, costs the issuer at most one request per interval. While a refresh fails, the keys
already cached stay in use (an issuer outage does not refuse every client); with no keys at all the answer is
``"issuer unreachable"``. Threads that find their key in a fresh cache never wait; refreshes of one issuer are
serialised (one fetch serves all waiting threads). ``clock`` drives only the cache and the rate limit;
``exp``/``nbf`` are checked by PyJWT against the wall clock, with the issuer's ``leeway``.

Reasons (``identity.Refused.reason``, audited by the service) are fixed strings and never contain token
material: "malformed token", "algorithm not allowed", "unknown issuer", "unknown signing key", "bad signature",
"token expired", "token not yet valid", "wrong audience", "issuer unreachable", "missing claim: <name>".

Discovery (OpenID Connect Discovery 1.0) is ``<issuer>/.well-known/openid-configuration``; its ``issuer`` must
equal the configured one and its ``jwks_uri`` names the key set. Plain ``http://`` is accepted for loopback
only (tests, a sidecar); everything else must be ``https://``. HTTP is the standard library's urllib.

Documented issuers (``issuer`` is the exact ``iss``; check it against the ``issuer`` of the discovery document):

- **Okta** (custom authorization server): ``https://<org>.okta.com/oauth2/<server>``, e.g. ``.../oauth2/default``.
  Audience: the authorization server's audience setting (``api://default`` for the default server). Groups: a
  ``groups`` claim, added to access tokens of a custom authorization server (the org server puts it in ID
  tokens only). Okta's ``sub`` is the user's login, or the client id for client-credentials tokens.
- **Microsoft Entra ID** (v2.0 tokens): ``https://login.microsoftonline.com/<tenant-id>/v2.0`` (a tenant GUID:
  ``common``/``organizations`` are not issuers). Audience: the resource application's client id (or its
  ``api://...`` Application ID URI, depending on how the token was requested). App roles arrive in ``roles``
  (also for app-only/client-credentials tokens), group object ids in ``groups`` when group claims are enabled;
  ``oid`` is the caller's stable object id, ``tid`` the tenant.
- **Databricks OAuth**: workspace ``https://<workspace-host>/oidc`` (discovery at
  ``https://<workspace-host>/oidc/.well-known/openid-configuration``, tokens from ``.../oidc/v1/token``);
  account ``https://accounts.cloud.databricks.com/oidc/accounts/<account-id>`` (Azure:
  ``accounts.azuredatabricks.net``, GCP: ``accounts.gcp.databricks.com``). For a service principal ``sub`` is
  its application id (a UUID), which policy rules match on. Databricks does not document the audience of its
  own access tokens as a contract: read ``aud`` from a decoded token of your workspace and configure it.

PyJWT (the ``auth-service`` extra) is imported lazily: importing this module needs only the standard library.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from databricks_nats.errors import ConfigurationError, DatabricksNatsError
from databricks_nats.integrations.identity.identity import Identity, Refused
from databricks_nats.integrations.identity.urls import require_https

if TYPE_CHECKING:
    import jwt

__all__ = ["OidcIssuer", "OidcVerifier"]

log = logging.getLogger(__name__)

_ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
_REQUIRED = ("exp", "iss", "sub", "aud")
_MAX_TOKEN = 16 * 1024  # bytes; real OIDC tokens are a few KiB
_MAX_DOCUMENT = 1024 * 1024  # a discovery document or JWKS larger than this is refused
_DISCOVERY_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class OidcIssuer:
    """One trusted issuer. Validated when built (``ConfigurationError`` names the field)."""

    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    discovery_url: str | None = None
    jwks_uri: str | None = None
    leeway: float = 30.0

    def __post_init__(self) -> None:
        # Lists from a config file become tuples (the dataclass stays hashable and immutable).
        for name in ("audiences", "algorithms"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ConfigurationError(f"oidc.{name}", "must be a list of strings")
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.issuer, str) or not self.issuer:
            raise ConfigurationError("oidc.issuer", "must be a non-empty URL")
        require_https("oidc.issuer", self.issuer)
        if not self.audiences or not all(isinstance(a, str) and a for a in self.audiences):
            raise ConfigurationError("oidc.audiences", "at least one non-empty audience is required")
        if not self.algorithms:
            raise ConfigurationError("oidc.algorithms", "at least one algorithm is required")
        for alg in self.algorithms:
            if not isinstance(alg, str) or alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ConfigurationError("oidc.algorithms", f"{alg!r} is not allowed (asymmetric algorithms only)")
            if alg not in _ASYMMETRIC:
                raise ConfigurationError("oidc.algorithms", f"{alg!r} is not supported; use {sorted(_ASYMMETRIC)}")
        for name in ("discovery_url", "jwks_uri"):
            url = getattr(self, name)
            if url is not None:
                require_https(f"oidc.{name}", url)
        if not isinstance(self.leeway, (int, float)) or not math.isfinite(self.leeway) or self.leeway < 0:
            raise ConfigurationError("oidc.leeway", "must be a finite number of seconds >= 0")

    @property
    def discovery(self) -> str:
        """The discovery document's URL."""
        return self.discovery_url or self.issuer.rstrip("/") + _DISCOVERY_PATH


class _FetchError(DatabricksNatsError):
    """Discovery or JWKS could not be fetched or made no sense (message: no token material, ever)."""


@dataclass(frozen=True)
class _Keys:
    """A JWKS snapshot: signing keys by kid (a key without kid under ""), when it was fetched, and the
    ``PyJWK`` objects built from it so far, by (kid, alg)."""

    by_kid: Mapping[str, Mapping[str, Any]]
    fetched_at: float
    bound: dict[tuple[str, str], jwt.PyJWK] = field(default_factory=dict)


class _IssuerState:
    """The cache of one issuer. ``keys`` is replaced whole (readers need no lock); ``lock`` serialises fetches."""

    def __init__(self, config: OidcIssuer) -> None:
        self.config = config
        self.keys: _Keys | None = None
        self.jwks_uri: str | None = config.jwks_uri
        self.last_attempt: float | None = None
        self.lock = threading.Lock()


class OidcVerifier:
    """Verifies OIDC JWTs of the configured issuers; thread-safe."""

    def __init__(
        self,
        issuers: Sequence[OidcIssuer],
        *,
        cache_ttl: float = 300.0,
        min_refresh_interval: float = 10.0,
        timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuers:
            raise ConfigurationError("oidc.issuers", "at least one issuer is required")
        states: dict[str, _IssuerState] = {}
        for issuer in issuers:
            if issuer.issuer in states:
                raise ConfigurationError("oidc.issuers", f"issuer {issuer.issuer!r} is listed twice")
            states[issuer.issuer] = _IssuerState(issuer)
        for name, value, low in (("cache_ttl", cache_ttl, 0.0), ("timeout", timeout, 0.0)):
            if not math.isfinite(value) or value <= low:
                raise ConfigurationError(f"oidc.{name}", "must be a positive number of seconds")
        if not math.isfinite(min_refresh_interval) or min_refresh_interval < 0:
            raise ConfigurationError("oidc.min_refresh_interval", "must be a number of seconds >= 0")
        self._issuers = states
        self._cache_ttl = float(cache_ttl)
        self._min_refresh = float(min_refresh_interval)
        self._timeout = float(timeout)
        self._ssl = ssl_context
        self._clock = clock

    def warm(self) -> None:
        """Fetch discovery and JWKS of every issuer now (at service start). Never raises; failures are logged."""
        for state in self._issuers.values():
            with state.lock:
                try:
                    self._fetch(state)
                except Exception as exc:  # noqa: BLE001 - warm must never take the service down
                    log.warning("OIDC issuer %s: keys not fetched at start: %s", state.config.issuer, exc)

    def verify(self, token: str) -> Identity:
        """The identity a valid token proves; ``Refused(reason)`` otherwise."""
        import jwt

        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN or token.count(".") != 2:
            raise Refused("malformed token")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Refused("malformed token") from None
        iss = unverified.get("iss")
        if iss is None:
            raise Refused("missing claim: iss")
        if not isinstance(iss, str):
            raise Refused("malformed token")
        state = self._issuers.get(iss)
        if state is None:
            raise Refused("unknown issuer")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in state.config.algorithms:
            raise Refused("algorithm not allowed")
        kid = header.get("kid", "")
        if not isinstance(kid, str):
            raise Refused("malformed token")
        key = self._key(state, kid, alg)
        config = state.config
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=list(config.audiences),
                issuer=config.issuer,
                leeway=config.leeway,
                options={"require": list(_REQUIRED), "verify_signature": True},
            )
        except jwt.PyJWTError as exc:
            raise Refused(_reason(exc)) from None
        if not claims["sub"]:
            raise Refused("missing claim: sub")
        return Identity(
            kind="oidc", issuer=config.issuer, subject=claims["sub"], expires_at=float(claims["exp"]), claims=claims
        )

    def _key(self, state: _IssuerState, kid: str, alg: str) -> jwt.PyJWK:
        """The key ``kid`` bound to ``alg``, refreshing the JWKS when stale or when ``kid`` is unknown."""
        keys = state.keys
        known = keys is not None and kid in keys.by_kid
        if keys is None or not known or self._clock() - keys.fetched_at >= self._cache_ttl:
            keys = self._refresh(state, kid, block=not known)
        if keys is None:
            raise Refused("issuer unreachable")
        jwk = keys.by_kid.get(kid)
        if jwk is None:
            raise Refused("unknown signing key")
        return _bind(keys, kid, jwk, alg)

    def _refresh(self, state: _IssuerState, kid: str, *, block: bool) -> _Keys | None:
        """Refresh once if the rate limit allows; returns the keys to use. ``block=False``: a stale cache
        whose refresh another thread already does is used as is."""
        if not state.lock.acquire(blocking=block):
            return state.keys
        try:
            keys = state.keys
            now = self._clock()
            if keys is not None and kid in keys.by_kid and now - keys.fetched_at < self._cache_ttl:
                return keys  # another thread refreshed while we waited
            if state.last_attempt is not None and now - state.last_attempt < self._min_refresh:
                return keys  # rate-limited: at most one fetch per interval and issuer
            try:
                return self._fetch(state)
            except _FetchError as exc:
                log.warning("OIDC issuer %s: JWKS refresh failed: %s", state.config.issuer, exc)
                if keys is None or kid not in keys.by_kid:
                    raise Refused("issuer unreachable") from None
                return keys  # keep serving the cached keys while the issuer is down
        finally:
            state.lock.release()

    def _fetch(self, state: _IssuerState) -> _Keys:
        """Discovery (until it succeeds once) then the JWKS. Caller holds ``state.lock``."""
        state.last_attempt = self._clock()
        config = state.config
        if state.jwks_uri is None:
            document = self._get_json(config.discovery)
            if document.get("issuer") != config.issuer:
                raise _FetchError("the discovery document names another issuer")
            uri = document.get("jwks_uri")
            if not isinstance(uri, str):
                raise _FetchError("the discovery document has no jwks_uri")
            try:
                require_https("jwks_uri", uri)
            except ConfigurationError as exc:
                raise _FetchError(str(exc)) from None
            state.jwks_uri = uri
        try:
            jwks = self._get_json(state.jwks_uri)
        except _FetchError:
            if config.jwks_uri is None:
                state.jwks_uri = None  # the issuer may have moved its keys: discover again next time
            raise
        by_kid = _signing_keys(jwks)
        keys = _Keys(by_kid=by_kid, fetched_at=self._clock())
        state.keys = keys
        log.info("OIDC issuer %s: %d signing key(s) loaded", config.issuer, len(by_kid))
        return keys

    def _get_json(self, url: str) -> Mapping[str, Any]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - checked URL
        try:
            with urllib.request.urlopen(request, timeout=self._timeout, context=self._ssl) as response:  # noqa: S310
                require_https("url", response.geturl())
                body = response.read(_MAX_DOCUMENT + 1)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise _FetchError(f"GET {url} failed: {type(exc).__name__}: {exc}") from None
        if len(body) > _MAX_DOCUMENT:
            raise _FetchError(f"GET {url}: document larger than {_MAX_DOCUMENT} bytes")
        try:
            document = json.loads(body)
        except ValueError:
            raise _FetchError(f"GET {url}: not JSON") from None
        if not isinstance(document, dict):
            raise _FetchError(f"GET {url}: not a JSON object")
        return document


def _signing_keys(jwks: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The JWKS's public signing keys by kid; a single key without kid is found under ""."""
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise _FetchError("the JWKS has no 'keys' list")
    by_kid: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # symmetric ("oct") or unknown keys are never used
        if entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid", "")
        if isinstance(kid, str):
            by_kid.setdefault(kid, entry)
    return by_kid


def _bind(keys: _Keys, kid: str, jwk: Mapping[str, Any], alg: str) -> jwt.PyJWK:
    """A PyJWK for ``jwk`` verifying ``alg`` (cached in the snapshot). A key that declares another alg, or of
    another type, cannot have signed the token: "bad signature"."""
    import jwt

    cached = keys.bound.get((kid, alg))
    if cached is not None:
        return cached
    declared = jwk.get("alg")
    if declared is not None and declared != alg:
        raise Refused("bad signature")
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=alg)
    except jwt.PyJWTError:
        raise Refused("bad signature") from None
    keys.bound[(kid, alg)] = key
    return key


def _reason(exc: Exception) -> str:
    """PyJWT's exception → the audited reason (never PyJWT's message, which may quote claims)."""
    import jwt

    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim: {exc.claim}" if exc.claim in _REQUIRED else "malformed token"
    reasons: tuple[tuple[type[Exception], str], ...] = (
        (jwt.ExpiredSignatureError, "token expired"),
        (jwt.ImmatureSignatureError, "token not yet valid"),
        (jwt.InvalidAudienceError, "wrong audience"),
        (jwt.InvalidIssuerError, "unknown issuer"),
        (jwt.InvalidSignatureError, "bad signature"),
        (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    )
    return next((reason for kind, reason in reasons if isinstance(exc, kind)), "malformed token")
