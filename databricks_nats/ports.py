"""Ports: what the core asks of the world, defined here (low) and implemented by integrations (high).

The core (settings, transport) never imports an integration. A ``Client`` is given a ``SecretSource`` and a
``ContextProvider``; the Databricks ones (``integrations.databricks``) are the defaults the surfaces inject.
A client that publishes as its own identity (``oidc_token``, ``aws_iam``) is given a ``TokenSource``
(``integrations.identity.sources`` builds the default one from the settings). Tests inject their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from databricks_nats.values import Secret

if TYPE_CHECKING:
    from databricks_nats.model.events import Event
    from databricks_nats.settings import Settings

__all__ = [
    "ContextProvider",
    "FlushResult",
    "IdentityToken",
    "MappingSecrets",
    "NoContext",
    "SecretSource",
    "TokenSource",
    "Transport",
    "plain_context",
]


@runtime_checkable
class SecretSource(Protocol):
    """Reads one secret by scope and key (a Databricks secret scope, a vault, a dict in a test).

    ``None`` when the key does not exist; raises ``ConfigurationError`` when the source cannot be reached.
    Called at every (re)connect, on the publisher's worker thread: an implementation imports what it needs
    when it is built, not when it is called.
    """

    def get(self, scope: str, key: str) -> str | None: ...


@dataclass(frozen=True, repr=False)
class IdentityToken:
    """A short-lived proof of who the client is (an OIDC JWT, a signed AWS request), presented as the NATS token.

    ``expires_at`` (epoch seconds, None when unknown) is when it stops being accepted: the client gets a new one
    before then. ``source`` says where it came from, never what it is.
    """

    value: Secret
    expires_at: float | None
    source: str

    def __repr__(self) -> str:
        return f"IdentityToken(from {self.source})"


@runtime_checkable
class TokenSource(Protocol):
    """Gets a fresh identity token (reads a file, runs a command, asks an SDK).

    ``fast`` sources (a file, a variable) are read on the connection's loop at every connect; the others on a
    thread of their own, ahead of the token's expiry. Raises ``ConfigurationError`` (no value in the message)
    when no token can be had.
    """

    @property
    def description(self) -> str: ...
    @property
    def fast(self) -> bool: ...
    def token(self) -> IdentityToken: ...


@runtime_checkable
class ContextProvider(Protocol):
    """Finds where this process runs; never raises.

    Returns the settings with what was found applied (the numeric workspace id becomes the ``workspace``
    token before anything derives from it) and the context every event carries (``workspace``, ``env``,
    cluster, notebook, job…).
    """

    def detect(self, settings: Settings) -> tuple[Settings, dict[str, Any]]: ...


@dataclass(frozen=True)
class FlushResult:
    """The outcome of ``flush``: ``ok`` when everything emitted before it is acked; else what is pending.

    Declared with the ``Transport`` contract it belongs to (``transport.publisher`` exports it too).
    """

    ok: bool
    pending: int

    def __bool__(self) -> bool:
        return self.ok


class Transport(Protocol):
    """What every publisher offers a client: hand over events, flush, report, close."""

    settings: Settings

    def emit(self, event: Event) -> None: ...
    def emit_many(self, events: Iterable[Event]) -> None: ...
    def flush(self, timeout: float = 10.0) -> FlushResult: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self, timeout: float = 5.0) -> FlushResult: ...


def plain_context(settings: Settings) -> dict[str, Any]:
    """The context every event carries when nothing was detected: the namespace parts."""
    return {"workspace": settings.workspace, "env": settings.env}


class NoContext:
    """A ``ContextProvider`` that detects nothing (off Databricks, or ``detect_context=false``)."""

    def detect(self, settings: Settings) -> tuple[Settings, dict[str, Any]]:
        return settings, plain_context(settings)


class MappingSecrets:
    """A ``SecretSource`` over a mapping ``{(scope, key): value}`` or ``{"scope/key": value}`` (tests, vaults)."""

    def __init__(self, values: Mapping[Any, str]) -> None:
        self._values = {(k if isinstance(k, tuple) else tuple(str(k).split("/", 1))): v for k, v in values.items()}

    def get(self, scope: str, key: str) -> str | None:
        return self._values.get((scope, key))
