"""NATS credentials: the resolution chain, rotation-friendly connect options, TLS and a printable source.

Chain: settings (keyword arguments, then ``DATABRICKS_NATS_*``; a value may be a file path, read again at
every resolution) > the secret scope ``secret_scope``. The first that holds any secret credential supplies
all of them; non-secret ``user``/``tls_ca``/``tls_cert`` settings complete a secret-scope set. An identity
(``oidc_token`` or ``aws_iam``) replaces the static credentials: its token comes from the ``TokenSource`` the
caller gives (``ports.py``) and is presented as the NATS token to the auth-callout service, which answers
with a short-lived NATS user. It is read ahead of its expiry (``Link`` then replaces the connection) and, for a
fast source (a file, a variable), again at every connect.

**Inboxes.** The service lets an identity subscribe to its own inboxes only: ``inbox_prefix(token)``,
``_INBOX.`` + the first 32 hex digits of the SHA-256 of the exact token presented (the one rule both sides
import). So an identity's connection uses that inbox prefix (nats-py's ``inbox_prefix``, which JetStream acks,
pulls and requests use) and binds its token per connection, not through a callback: nats-py's reconnect reuses
the connection's prefix, so a new token needs a new connection (``needs_new_connection``).

Secret scopes and ``{{secrets/<scope>/<key>}}`` references are read through the ``SecretSource`` the caller
gives (``ports.py``; the Databricks one is ``integrations.databricks.DatabricksSecrets``): this module imports
no integration. Without one, settings that name a scope or a reference raise ``ConfigurationError``.

The connection's ``CredentialProvider`` (``credential_provider.py``) keeps a resolution fresh for nats-py.
No value ever appears in a repr, log line or error message.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import os
import re
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any

from databricks_nats.errors import ConfigurationError
from databricks_nats.ports import SecretSource, TokenSource
from databricks_nats.settings import Secret, Settings

__all__ = [
    "Credentials",
    "auth_options",
    "credentials_source",
    "inbox_prefix",
    "require_identity_source",
    "require_nkeys",
    "require_secret_source",
    "resolve_credentials",
]

log = logging.getLogger("databricks_nats")

_SECRET_KINDS = ("creds", "token", "password", "nkey_seed", "tls_key")
_ALL_KINDS = ("creds", "token", "user", "password", "nkey_seed", "tls_ca", "tls_cert", "tls_key")


def _is_path(value: str) -> bool:
    return "\n" not in value and len(value) < 4096 and os.path.isfile(os.path.expanduser(value))


def inbox_prefix(token: str) -> str:
    """The inbox prefix of a connection that presents the identity token ``token``: ``_INBOX.`` + the first 32
    hex digits of SHA-256 over the token's UTF-8 bytes, exactly as sent in CONNECT's ``auth_token``. The auth
    service grants subscribe ``<this>.>`` (not ``_INBOX.>``): only the token's holder can compute it. Other
    clients follow the same rule (nats.go: ``nats.CustomInboxPrefix(prefix)``; nats.py: ``inbox_prefix=``)."""
    return "_INBOX." + hashlib.sha256(token.encode("utf-8")).hexdigest()[:32]


_REFRESH_BEFORE = 60.0  # seconds before an identity token expires that a new one is read (at most)

_SECRET_REF = re.compile(r"\{\{\s*secrets/([^/{}\s]+)/([^/{}\s]+)\s*\}\}")


def _no_source(what: str) -> ConfigurationError:
    problem = f"{what} needs a secret source, but no secret source was given (pass secrets=DatabricksSecrets())"
    return ConfigurationError("secret_scope", problem)


def _references(settings: Settings) -> list[str]:
    """The names of the credential settings whose value is a ``{{secrets/<scope>/<key>}}`` reference."""
    out = []
    for kind in _ALL_KINDS:
        value = getattr(settings, kind)
        text = value.reveal() if isinstance(value, Secret) else value
        if isinstance(text, str) and _SECRET_REF.fullmatch(text.strip()):
            out.append(kind)
    return out


def _uses_scope(settings: Settings) -> bool:
    return bool(settings.secret_scope) and not any(getattr(settings, k) is not None for k in _SECRET_KINDS)


def require_secret_source(settings: Settings, secrets: SecretSource | None) -> None:
    """Raise ConfigurationError (at configure) when these settings read secrets and no source was given."""
    if secrets is not None:
        return
    if _uses_scope(settings):
        raise _no_source(f"secret scope {settings.secret_scope!r}")
    refs = _references(settings)
    if refs:
        raise _no_source(f"the {{{{secrets/...}}}} reference in {refs[0]}")


def _identity_setting(settings: Settings) -> str | None:
    return "oidc_token" if settings.oidc_token else "aws_iam" if settings.aws_iam else None


def require_identity_source(settings: Settings, identity: TokenSource | None) -> None:
    """Raise ConfigurationError (at configure) when these settings name an identity and no source was given."""
    name = _identity_setting(settings)
    if name is not None and identity is None:
        raise ConfigurationError(name, "needs an identity token source, but none was given (pass identity=...)")


def _load(value: str, secrets: SecretSource | None) -> str:
    """The value itself, the secret a ``{{secrets/<scope>/<key>}}`` reference names (read from ``secrets``),
    or the content of the file it names; re-read at every resolution (rotation)."""
    ref = _SECRET_REF.fullmatch(value.strip())
    if ref is not None:
        if secrets is None:
            raise _no_source("a {{secrets/...}} reference")
        scope, key = ref.groups()
        found = secrets.get(scope, key)
        if found is None:
            raise ConfigurationError("secret_scope", f"secret reference: key {key!r} of scope {scope!r} does not exist")
        return found
    if _is_path(value):
        with open(os.path.expanduser(value), encoding="utf-8") as f:
            return f.read()
    return value


@dataclass(frozen=True, repr=False)
class Credentials:
    """One resolved credential set; ``source`` says where it came from (never what it is)."""

    source: str = "none"
    creds: Secret | None = None
    token: Secret | None = None
    user: str | None = None
    password: Secret | None = None
    nkey_seed: Secret | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: Secret | None = None
    expires_at: float | None = None  # an identity token's expiry (epoch seconds)
    identity: bool = False  # ``token`` is an identity token: bound per connection, with its own inbox prefix

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in _ALL_KINDS if getattr(self, k) is not None)

    def describe(self) -> str:
        return f"{', '.join(self.kinds) or 'no credentials'} from {self.source}"

    def __repr__(self) -> str:
        return f"Credentials({self.describe()})"

    def _bound(self) -> tuple[Any, ...]:
        return (self.kinds, self.nkey_seed, self.tls_ca, self.tls_cert, self.tls_key, self._identity_token())

    def _identity_token(self) -> Secret | None:
        return self.token if self.identity else None

    def identity_options(self) -> dict[str, Any]:
        """nats-py options for an identity: its token, fixed for the connection, and that token's inbox prefix."""
        if not self.identity or self.token is None:
            return {}
        token = self.token.reveal()
        return {"token": token, "inbox_prefix": inbox_prefix(token)}


def _from_settings(settings: Settings, secrets: SecretSource | None) -> Credentials:
    def secret(value: Secret | None, strip: bool = True) -> Secret | None:
        if value is None:
            return None
        text = _load(value.reveal(), secrets)
        return Secret(text.strip() if strip else text)

    return Credentials(
        source="settings (arguments / DATABRICKS_NATS_*)",
        creds=secret(settings.creds, strip=False),
        token=secret(settings.token),
        user=settings.user,
        password=secret(settings.password),
        nkey_seed=secret(settings.nkey_seed),
        tls_ca=_load(settings.tls_ca, secrets) if settings.tls_ca else None,
        tls_cert=_load(settings.tls_cert, secrets) if settings.tls_cert else None,
        tls_key=secret(settings.tls_key, strip=False),
    )


def _from_scope(settings: Settings, scope: str, secrets: SecretSource | None) -> Credentials:
    if secrets is None:
        raise _no_source(f"secret scope {scope!r}")
    found: dict[str, str] = {}
    for kind, key in settings.secret_keys:
        value = secrets.get(scope, key)
        if value is not None:
            found[kind] = value if kind in ("creds", "tls_key", "tls_ca", "tls_cert") else value.strip()
    if not set(found) & set(_SECRET_KINDS):
        raise ConfigurationError(
            "secret_scope", f"scope {scope!r} holds none of the keys {', '.join(k for _, k in settings.secret_keys)}"
        )
    own = _from_settings(settings, secrets)
    return Credentials(
        source=f"Databricks secret scope {scope!r} ({', '.join(k for c, k in settings.secret_keys if c in found)})",
        creds=Secret(found["creds"]) if "creds" in found else None,
        token=Secret(found["token"]) if "token" in found else None,
        user=found.get("user") or settings.user,
        password=Secret(found["password"]) if "password" in found else None,
        nkey_seed=Secret(found["nkey_seed"]) if "nkey_seed" in found else None,
        tls_ca=own.tls_ca or found.get("tls_ca"),
        tls_cert=own.tls_cert or found.get("tls_cert"),
        tls_key=Secret(found["tls_key"]) if "tls_key" in found else None,
    )


def _from_identity(settings: Settings, identity: TokenSource | None, secrets: SecretSource | None) -> Credentials:
    require_identity_source(settings, identity)
    assert identity is not None
    found = identity.token()
    own = _from_settings(settings, secrets)  # TLS material and a user name still come from the settings
    return dataclasses.replace(own, source=found.source, token=found.value, expires_at=found.expires_at, identity=True)


def resolve_credentials(
    settings: Settings, secrets: SecretSource | None = None, identity: TokenSource | None = None
) -> Credentials:
    """Walk the chain once (may call the secret or token source); raise ConfigurationError without any value."""
    if _identity_setting(settings):
        return _from_identity(settings, identity, secrets)
    if settings.secret_scope and _uses_scope(settings):
        found = _from_scope(settings, settings.secret_scope, secrets)
    else:
        found = _from_settings(settings, secrets)
    require_nkeys(found)  # a secret scope may hold a .creds file or a seed: same message as at configure
    return found


_JWT = re.compile(r"-----BEGIN NATS USER JWT-----\s*(\S+)\s*------END NATS USER JWT------")
_SEED = re.compile(r"-----BEGIN USER NKEY SEED-----\s*(\S+)\s*------END USER NKEY SEED------")


def _creds_parts(content: str) -> tuple[bytes, bytes]:
    jwt, seed = _JWT.search(content), _SEED.search(content)
    if not jwt or not seed:
        raise ConfigurationError("creds", "not a NATS .creds file (user JWT and seed blocks not found)")
    return jwt.group(1).encode(), seed.group(1).encode()


NKEYS_INSTALL = "pip install 'databricks-nats[nkeys]'"


def require_nkeys(source: Settings | Credentials) -> None:
    """NKey seeds and .creds files are signed with ``nkeys`` (the ``nkeys`` extra, not a hard dependency so that
    installing on a Databricks Runtime moves none of its packages): without it, fail naming the install."""
    kind = "creds" if source.creds is not None else "nkey_seed" if source.nkey_seed is not None else None
    if kind is None:
        return
    try:
        import nkeys  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            kind, f"NKey and .creds authentication need the nkeys package, not installed: {NKEYS_INSTALL}"
        ) from None


def _sign(seed: bytes, nonce: str) -> bytes:
    import nkeys

    kp = nkeys.from_seed(bytearray(seed))
    try:
        return base64.b64encode(kp.sign(nonce.encode()))
    finally:
        kp.wipe()


def tls_context(c: Credentials) -> ssl.SSLContext | None:
    """An SSL context with the custom CA and client certificate, or None when neither is configured."""
    if c.tls_ca is None and c.tls_cert is None and c.tls_key is None:
        return None
    ctx = ssl.create_default_context()
    if c.tls_ca:
        ctx.load_verify_locations(cadata=c.tls_ca)
    if c.tls_cert:
        # load_cert_chain reads files only: write them for the call into a private directory, then delete.
        with tempfile.TemporaryDirectory(prefix="dbx-nats-tls-") as d:
            cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            for path, text in ((cert, c.tls_cert), (key, c.tls_key.reveal() if c.tls_key else None)):
                if text is not None:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w") as f:
                        f.write(text)
            try:
                ctx.load_cert_chain(cert, key if c.tls_key else None)
            except (ssl.SSLError, ValueError) as e:
                problem = f"client certificate or key unusable: {type(e).__name__}"
                raise ConfigurationError("tls_cert", problem) from None
    return ctx


def _tls_options(settings: Settings, c: Credentials) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    ctx = tls_context(c)
    if ctx is not None:
        opts["tls"] = ctx
    if settings.tls_hostname:
        opts["tls_hostname"] = settings.tls_hostname
    return opts


def auth_options(
    settings: Settings, secrets: SecretSource | None = None, identity: TokenSource | None = None
) -> dict[str, Any]:
    """Keyword arguments for a one-off ``nats.connect``: freshly resolved credentials and TLS (never logged)."""
    from nats.aio.client import RawCredentials

    c = resolve_credentials(settings, secrets, identity)
    opts = _tls_options(settings, c)
    if c.creds is not None:
        opts["user_credentials"] = RawCredentials(c.creds.reveal())
    elif c.nkey_seed is not None:
        opts["nkeys_seed_str"] = c.nkey_seed.reveal()
    if c.identity:
        opts.update(c.identity_options())
    elif c.token is not None:
        opts["token"] = c.token.reveal()
    if c.user:
        opts["user"] = c.user
        if c.password is not None:
            opts["password"] = c.password.reveal()
    return opts


def credentials_source(settings: Settings) -> str:
    """A printable description of where credentials come from (no values, no network)."""
    if settings.oidc_token:
        return f"OIDC token ({settings.oidc_token.split(':', 1)[0]}) for the auth service"
    if settings.aws_iam:
        return "AWS IAM (signed sts:GetCallerIdentity) for the auth service"
    kinds = [k for k in _ALL_KINDS if getattr(settings, k) is not None]
    if not _uses_scope(settings):
        return f"{', '.join(kinds)} from settings" if kinds else "none"
    keys = ", ".join(f"{kind}={key}" for kind, key in settings.secret_keys)
    return f"Databricks secret scope {settings.secret_scope!r} ({keys})"
