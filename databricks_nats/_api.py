"""The module functions (configure, emit, flush, stats, shutdown…): a thin layer over the default client.

``databricks_nats.client`` owns the client and the default one (``current_client()``); every function here
asks for it at the call, so ``configure()`` and ``testing.capture()`` take effect at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from databricks_nats.client import (
    EmitItem,
    NoopPublisher,
    adopt,
    build_transport,
    configure,
    current_client,
    default_client,
    make_encoder,
)
from databricks_nats.failures import fail_unconfigured
from databricks_nats.model.causation import Causation
from databricks_nats.model.events import Event
from databricks_nats.ports import FlushResult, Transport, plain_context
from databricks_nats.settings import Settings

if TYPE_CHECKING:
    from databricks_nats.transport.stream import StreamReport

__all__ = [
    "NoopPublisher",
    "Transport",
    "adopt",
    "base_context",
    "build_transport",
    "configure",
    "emit",
    "emit_many",
    "ensure_stream",
    "flush",
    "get_settings",
    "make_encoder",
    "publish",
    "set_transport",
    "shutdown",
    "stats",
]

base_context = plain_context  # the context events carry when none was detected: the namespace parts


def get_settings() -> Settings:
    """The settings in effect (those of the default client, made from the environment if not configured)."""
    return current_client().settings


def _current() -> Transport:
    """The default client's publisher, started if needed."""
    return current_client().start()


def set_transport(transport: Transport | None) -> Transport | None:
    """Swap the default client's publisher (tests); return the previous one, which is not closed."""
    return current_client().swap_transport(transport)


def __getattr__(name: str) -> Any:
    if name == "_transport":  # the default client's publisher or None (older tests and scripts read it)
        client = default_client()
        return client.transport if client is not None else None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def emit(
    event_type: str,
    data: Mapping[str, Any] | None = None,
    *,
    keys: Any = None,
    dataref: str | None = None,
    causation: Causation | None = None,
    id: str | None = None,
) -> Event | None:
    """Publish an event without blocking; return it, or None when it could not be created (never raises).

    ``event_type`` is ``<source>.<entity>.<action>``; catalogued types take their subject keys from
    ``data``, custom types from ``keys``. ``dataref`` is the event's main pointer URI. ``data`` is captured
    now (a JSON-safe copy, see ``jsonsafe.snapshot``): changing it after the call does not change the event.
    ``causation``: the event this one reacts to (default: the one handled here, see ``caused_by``). ``id``: a
    fixed event id for a fact that may be announced twice (see ``Client.emit``).
    """
    try:
        client = current_client()
    except Exception as e:  # noqa: BLE001 - fail-open: the environment's settings do not resolve
        fail_unconfigured(e, f"emit({event_type!r})")
        return None
    return client.emit(event_type, data, keys=keys, dataref=dataref, causation=causation, id=id)


def emit_many(items: Iterable[EmitItem]) -> int:
    """Publish ``(event_type, data[, time_ns])`` items in one hand-over to the publisher; return how many it took."""
    try:
        client = current_client()
    except Exception as e:  # noqa: BLE001 - fail-open: the environment's settings do not resolve
        fail_unconfigured(e, "emit_many()")
        return 0
    return client.emit_many(items)


_publish_warned = False


def publish(
    event_type: str, data: Mapping[str, Any] | None = None, *, keys: Any = None, dataref: str | None = None
) -> Event | None:
    """Deprecated alias of ``emit`` (warns once per process with a DeprecationWarning)."""
    global _publish_warned
    if not _publish_warned:
        _publish_warned = True
        warnings.warn(
            "databricks_nats.publish() is deprecated; use databricks_nats.emit()", DeprecationWarning, stacklevel=2
        )
    return emit(event_type, data, keys=keys, dataref=dataref)


def flush(timeout: float = 10.0) -> FlushResult:
    """Wait until every event emitted before the call is acknowledged; in strict mode raise on timeout."""
    return current_client().flush(timeout)


def stats() -> dict[str, Any]:
    """Counters and gauges of the default client's publisher (see README "Stats"), and the live event families."""
    return current_client().stats()


def shutdown(timeout: float = 5.0) -> FlushResult:
    """Flush for at most ``timeout`` seconds and stop the default publisher; unacked events stay spooled."""
    client = default_client()
    return client.close(timeout) if client is not None else FlushResult(True, 0)


def ensure_stream(*, update: bool = False, timeout: float = 10.0, **settings: Any) -> StreamReport:
    """Create or check the JetStream stream of this namespace; raise StreamMismatch when it differs.

    Uses its own short-lived connection, so it works before (or without) ``configure``. With keyword
    settings, for the namespace they name (no context detection); else the default client's.
    """
    if settings:
        from databricks_nats.client import Client
        from databricks_nats.ports import NoContext

        return Client(context=NoContext(), **settings).ensure_stream(update=update, timeout=timeout)
    return current_client().ensure_stream(update=update, timeout=timeout)
