"""The process-wide publisher behind the public functions: configure, emit, flush, stats, shutdown."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from databricks_nats._exit import at_exit
from databricks_nats.errors import DatabricksNatsError, FlushTimeout, PublishError, StreamError
from databricks_nats.model import catalog, jsonsafe
from databricks_nats.model.events import Encoder, Event, new_event
from databricks_nats.settings import Settings, redact_url, resolve_settings
from databricks_nats.transport.publisher import FlushResult, Publisher
from databricks_nats.transport.spool import open_spool

__all__ = ["configure", "emit", "ensure_stream", "flush", "get_settings", "publish", "shutdown", "stats"]

if TYPE_CHECKING:
    from databricks_nats.transport.stream import StreamReport

log = logging.getLogger("databricks_nats")


class Transport(Protocol):
    """What every publisher offers: hand over an event, flush, report, close."""

    settings: Settings

    def emit(self, event: Event) -> None: ...
    def flush(self, timeout: float = 10.0) -> FlushResult: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self, timeout: float = 5.0) -> FlushResult: ...


class NoopPublisher:
    """The publisher when ``disabled`` is set: accepts and discards everything."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._count = 0

    def emit(self, event: Event) -> None:
        self._count += 1

    def flush(self, timeout: float = 10.0) -> FlushResult:
        return FlushResult(True, 0)

    def stats(self) -> dict[str, Any]:
        return {"disabled": True, "emitted": self._count, "dropped": {"disabled": self._count}, "pending": 0}

    def close(self, timeout: float = 5.0) -> FlushResult:
        return FlushResult(True, 0)


def base_context(settings: Settings) -> dict[str, Any]:
    """The context every event carries when none was detected: the namespace parts."""
    return {"workspace": settings.workspace, "env": settings.env}


def _resolve(overrides: Mapping[str, Any]) -> tuple[Settings, dict[str, Any]]:
    """Settings plus the detected Databricks context: the numeric workspace id (when known) becomes the
    workspace token before anything derives from it (namespace, stream, spool); never raises for context."""
    resolved = resolve_settings(**overrides)
    if not resolved.detect_context:
        return resolved, base_context(resolved)
    from databricks_nats.integrations.databricks import apply_context, as_event_context, detect_context

    found = detect_context(resolved)
    resolved = apply_context(resolved, found)
    return resolved, as_event_context(found, resolved)


def make_encoder(settings: Settings, context: Mapping[str, Any]) -> Any:
    """The function the worker uses to turn an Event into (subject, payload), given ``max_bytes``."""
    return Encoder(namespace=settings.namespace, workspace=settings.workspace, env=settings.env, context=dict(context))


def build_transport(settings: Settings, context: Mapping[str, Any] | None = None) -> Transport:
    """A publisher for these settings: no-op when disabled, else the background publisher."""
    if settings.disabled:
        return NoopPublisher(settings)
    spool = open_spool(settings.spool_path, settings.spool_max_bytes)
    publisher = Publisher(settings, spool, make_encoder(settings, context or base_context(settings)))
    if getattr(spool, "adopted", 0):
        publisher.stats_.replayed = spool.adopted  # type: ignore[attr-defined]
        log.info("databricks-nats: re-publishing %d event(s) left by a previous process", spool.adopted)  # type: ignore[attr-defined]
    return publisher


_lock = threading.RLock()
_transport: Transport | None = None
_settings: Settings | None = None
_overrides: dict[str, Any] = {}


def configure(**settings: Any) -> Settings:
    """Set up (or replace) the process-wide publisher; raise ConfigurationError on bad settings.

    Keyword arguments override ``DATABRICKS_NATS_*`` variables, which override Spark conf.
    """
    global _transport, _settings, _overrides
    resolved, context = _resolve(settings)
    with _lock:
        old = _transport
        _transport, _settings, _overrides = None, resolved, dict(settings)
        if old is not None:
            old.close(timeout=min(5.0, resolved.exit_flush_timeout))
        _transport = build_transport(resolved, context)
    return resolved


def get_settings() -> Settings:
    """The settings in effect (resolving them from the environment if ``configure`` was not called)."""
    with _lock:
        return _settings if _settings is not None else _resolve(_overrides)[0]


def _current() -> Transport:
    global _transport, _settings
    t = _transport
    if t is not None:
        return t
    with _lock:
        if _transport is None:
            if _settings is None:
                _settings, context = _resolve(_overrides)
            else:
                context = _resolve(_overrides)[1] if _settings.detect_context else base_context(_settings)
            _transport = build_transport(_settings, context)
        return _transport


def adopt(settings: Settings, context: Mapping[str, Any] | None = None) -> bool:
    """Publish with these settings unless this process is configured already; return whether they were adopted.

    For a listener shipped to a process of its own (Spark Connect runs it next to the server): it brings its
    settings, but a process that already publishes keeps its own configuration.
    """
    global _transport, _settings
    with _lock:
        if _transport is not None or _settings is not None:
            return False
        _transport = build_transport(settings, context or base_context(settings))
        _settings = settings
        return True


def set_transport(transport: Transport | None) -> Transport | None:
    """Swap the process-wide transport (used by ``testing.capture``); return the previous one."""
    global _transport
    with _lock:
        old, _transport = _transport, transport
        return old


def _fail(e: Exception, what: str) -> None:
    t = _transport
    strict = t.settings.strict if t is not None else False
    if strict:
        if isinstance(e, DatabricksNatsError):
            raise e
        raise PublishError(f"{what}: {type(e).__name__}: {e}") from e
    text = _clip(redact_url(f"{type(e).__name__}: {e}"))
    # The first failure of a kind is a warning; repeats (a loop logging bad input) are counted and logged at
    # debug, with a warning again at every 1000th. User strings in the message are clipped.
    global _failures_of
    if _failures_of is not t or len(_failures) > 256:  # a new publisher warns afresh (ids of dead ones get reused)
        _failures.clear()
        _failures_of = t
    key = (what.split("(", 1)[0], type(e).__name__)
    seen = _failures[key] = _failures.get(key, 0) + 1
    level = logging.WARNING if seen == 1 or seen % 1000 == 0 else logging.DEBUG
    repeat = f" ({seen} times so far)" if seen > 1 else ""
    log.log(level, "databricks-nats: %s failed (%s)%s; training continues", _clip(what), text, repeat)
    if isinstance(t, Publisher):
        t.stats_.dropped["invalid"] += 1
        t.stats_.error("emit", text)


_failures: dict[tuple[str, str], int] = {}  # (what, exception type) -> failures seen with the publisher below
_failures_of: Transport | None = None


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more characters]"


def emit(
    event_type: str, data: Mapping[str, Any] | None = None, *, keys: Any = None, dataref: str | None = None
) -> Event | None:
    """Publish an event without blocking; return it, or None when it could not be created (never raises).

    ``event_type`` is ``<source>.<entity>.<action>``; catalogued types take their subject keys from
    ``data``, custom types from ``keys``. ``dataref`` is the event's main pointer URI. ``data`` is captured
    now (a JSON-safe copy, see ``jsonsafe.snapshot``): changing it after the call does not change the event.
    """
    try:
        etype = catalog.lookup(event_type)
        if data is not None and type(data) is not dict and not isinstance(data, Mapping):
            raise TypeError(f"data must be a mapping, got {type(data).__name__}")
        transport = _current()
        try:
            cap = transport.settings.max_event_bytes
        except AttributeError:  # a stand-in transport without settings
            cap = 8192
        if dataref is not None and type(dataref) is not str:
            dataref = str(dataref)  # a Path, a URL object…
        event = new_event(event_type, jsonsafe.snapshot(data, cap, etype), keys=keys, dataref=dataref)
        transport.emit(event)
        return event
    except Exception as e:  # noqa: BLE001 - fail-open: training code never sees publishing errors
        _fail(e, f"emit({event_type!r})")
        return None


publish = emit


def flush(timeout: float = 10.0) -> FlushResult:
    """Wait until every event emitted before the call is acknowledged; in strict mode raise on timeout."""
    result = _current().flush(timeout)
    if not result.ok and _current().settings.strict:
        raise FlushTimeout(result.pending, timeout)
    return result


def stats() -> dict[str, Any]:
    """Counters and gauges of the process-wide publisher (see README "Stats"), and the live event families."""
    from databricks_nats.status import families

    return {**_current().stats(), "families": families()}


def shutdown(timeout: float = 5.0) -> FlushResult:
    """Flush for at most ``timeout`` seconds and stop the publisher; unacked events stay spooled."""
    global _transport
    with _lock:
        t, _transport = _transport, None
    return t.close(timeout) if t is not None else FlushResult(True, 0)


def ensure_stream(*, update: bool = False, timeout: float = 10.0, **settings: Any) -> StreamReport:
    """Create or check the JetStream stream of this namespace; raise StreamMismatch when it differs.

    Uses its own short-lived connection, so it works before (or without) ``configure``.
    """
    import nats

    from databricks_nats.transport.auth import auth_options
    from databricks_nats.transport.stream import ensure_stream_async

    resolved = resolve_settings(**settings) if settings else get_settings()

    async def run() -> StreamReport:
        try:
            nc = await nats.connect(
                list(resolved.url),
                connect_timeout=resolved.connect_timeout,
                allow_reconnect=False,
                **auth_options(resolved),
            )
        except Exception as e:
            raise StreamError(f"cannot connect to NATS at {resolved.url}: {type(e).__name__}") from e
        try:
            return await ensure_stream_async(nc.jetstream(), resolved, update=update)
        finally:
            await nc.close()

    report: StreamReport = _run_sync(run(), timeout)
    return report


def _run_sync(coro: Any, timeout: float) -> Any:
    """Run a coroutine to completion from sync code, even when the caller is inside a running loop."""
    from databricks_nats.transport.reader import run_sync

    return run_sync(coro, timeout)


def _at_exit() -> None:
    t = _transport
    if t is not None:
        t.close(timeout=t.settings.exit_flush_timeout)


def _after_fork_in_child() -> None:
    """A forked child must not use the parent's worker thread or spool: it starts its own lazily."""
    global _transport, _lock
    _lock = threading.RLock()
    t = _transport
    _transport = None
    if isinstance(t, Publisher):
        t._spool_forget_after_fork()


at_exit(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
