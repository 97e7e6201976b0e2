"""The values settings are made of: ``Secret`` (masked), ``ServerUrls`` (masked passwords), ``redact_url``, and
the parsers that turn an argument, a variable, a file value or a Spark conf string into a setting's value (each
raises ``ValueError`` with what it expected; ``settings`` names the setting and where the value came from).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "CREDENTIAL_KINDS",
    "DEFAULT_SECRET_KEYS",
    "Secret",
    "ServerUrls",
    "boolean",
    "choice",
    "non_negative",
    "parse_optional",
    "parse_secret",
    "parse_secret_keys",
    "parse_urls",
    "patterns",
    "positive",
    "redact_url",
]


class Secret:
    """A secret value: masked in repr/str; call ``reveal()`` at the one place that needs it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def boolean(v: str | bool) -> bool:
    if isinstance(v, bool):
        return v
    low = str(v).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false")


def parse_urls(v: str | tuple[str, ...] | list[str]) -> ServerUrls:
    items = [u.strip() for u in (v.split(",") if isinstance(v, str) else v) if u.strip()]
    if not items:
        raise ValueError("expected one or more server URLs, comma-separated")
    for u in items:
        scheme = u.split("://", 1)[0] if "://" in u else ""
        if scheme not in ("nats", "tls", "ws", "wss"):
            raise ValueError(f"URL must start with nats://, tls://, ws:// or wss:// (got scheme {scheme or 'none'!r})")
    return ServerUrls(items)


# The userinfo of every URL in a text: after "scheme://", up to the last "@" before a space or comma, so a password
# holding "/", "@" or a quote is masked whole; then the userinfo of bare "user:pass@host" words with no scheme.
_SCHEMED = re.compile(r"(?P<lead>[A-Za-z][A-Za-z0-9+.-]*://)[^\s,]*@")
_BARE = re.compile(r"(?<![^\s,'\"(\[])(?![^\s,]*://)[^\s,'\"(\[][^\s,]*@")


def redact_url(url: str) -> str:
    """A server URL (or a text holding URLs) with any embedded user:password replaced by ****."""
    if "@" not in url:
        return url
    return _BARE.sub("****@", _SCHEMED.sub(r"\g<lead>****@", url))


class ServerUrls(tuple[str, ...]):
    """The ``url`` setting: a tuple of the real server URLs (what the client connects with), whose ``str`` and
    ``repr`` mask any user:password embedded in them (``nats://****@host:4222``), so a log line, an error
    message or a notebook cell that shows the setting never shows a password."""

    __slots__ = ()

    def redacted(self) -> tuple[str, ...]:
        """The URLs with any user:password replaced by ****."""
        return tuple(redact_url(u) for u in self)

    def __repr__(self) -> str:
        return repr(self.redacted())

    def __str__(self) -> str:
        return ", ".join(self.redacted())

    def __getitem__(self, index: Any) -> Any:
        item = tuple.__getitem__(self, index)
        return ServerUrls(item) if isinstance(index, slice) else item


def positive(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(v: Any) -> Any:
        x = kind(v)
        if not x > 0 or x == float("inf"):  # also rejects NaN
            raise ValueError("must be a positive, finite number")
        return x

    return parse


def non_negative(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(v: Any) -> Any:
        x = kind(v)
        if not x >= 0 or x == float("inf"):  # also rejects NaN
            raise ValueError("must be zero or a positive, finite number")
        return x

    return parse


def choice(*options: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        s = str(v).strip().lower()
        if s not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return s

    return parse


def patterns(v: Any) -> tuple[str, ...]:
    """Comma-separated (or a list of) glob patterns, lower-cased."""
    items = v.split(",") if isinstance(v, str) else list(v)
    return tuple(p.strip().lower() for p in items if p.strip())


def parse_secret(v: Any) -> Secret | None:
    if v is None or isinstance(v, Secret):
        return v
    s = str(v)
    return Secret(s) if s else None


def parse_optional(v: Any) -> str | None:
    return str(v) if v not in (None, "") else None


TOKEN_LOCATORS = "env:<VARIABLE>, file:<path>, command:<command line> or databricks"


def parse_token_locator(v: Any) -> str | None:
    """Where an identity token comes from: ``env:NAME``, ``file:PATH`` (an absolute path alone is a file),
    ``command:CMD`` or ``databricks`` (the Databricks SDK's OAuth token for the current identity)."""
    if v in (None, ""):
        return None
    text = str(v).strip()
    if text == "databricks":
        return text
    if text.startswith("/"):
        return "file:" + text
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("env", "file", "command") or not rest.strip():
        raise ValueError(f"expected one of {TOKEN_LOCATORS}")
    if kind == "env" and not rest.replace("_", "a").isalnum():
        raise ValueError("env: takes an environment variable name")
    return f"{kind}:{rest.strip()}"


CREDENTIAL_KINDS = ("creds", "token", "user", "password", "nkey_seed", "tls_cert", "tls_key", "tls_ca")
DEFAULT_SECRET_KEYS = tuple((k, "nats-" + k.replace("_", "-")) for k in CREDENTIAL_KINDS)


def parse_secret_keys(v: Any) -> tuple[tuple[str, str], ...]:
    """``kind=key`` pairs (comma-separated, or a mapping): which secret-scope key holds which credential."""
    pairs = list(v.items()) if isinstance(v, Mapping) else v
    if isinstance(v, str):
        pairs = [p.split("=", 1) if "=" in p else [p, ""] for p in v.split(",") if p.strip()]
    out = []
    for kind, key in pairs:
        kind, key = str(kind).strip(), str(key).strip()
        if kind not in CREDENTIAL_KINDS:
            raise ValueError(f"unknown credential {kind!r}; known: {', '.join(CREDENTIAL_KINDS)}")
        if not key:
            raise ValueError(f"expected {kind}=<secret key>")
        out.append((kind, key))
    return tuple(out)
