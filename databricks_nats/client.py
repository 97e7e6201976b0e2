"""The client: one publisher with its settings, event context and secret source, behind emit/flush/stats/close.

    import databricks_nats as dn

    with dn.Client(url="nats://nats.internal:4222", workspace="ws1", env="prod") as client:
        client.emit("myteam.features.refreshed", {"table": "main.features.users"}, keys=["users"])

Several clients may live in one process, each with its own publisher, spool and namespace. The module
functions (``dn.emit``, ``dn.flush``…) use the *default client*: ``current_client()`` makes it on first use
from the process configuration, ``configure()`` replaces it (closing the old publisher) and
``testing.capture()`` swaps it for the duration of a block (``set_current_client``). Integrations publish
through ``current_client()`` and learn about a new default client with ``on_reconfigure``.

Fail-open: ``emit`` never raises unless the client's settings are ``strict``; failures are logged (the first
of a kind at WARNING, repeats at DEBUG) and counted. Every client with an open publisher is flushed at
interpreter exit and forgets its publisher in a forked child (``_live.py``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from databricks_nats import _live
from databricks_nats._factory import (
    NoopPublisher,
    build_transport,
    default_context,
    default_identity,
    default_secrets,
    make_encoder,
)
from databricks_nats.errors import DatabricksNatsError, FlushTimeout, PublishError, StreamError
from databricks_nats.failures import Failures
from databricks_nats.model import catalog, jsonsafe
from databricks_nats.model.causation import Causation
from databricks_nats.model.events import Event, new_event
from databricks_nats.ports import ContextProvider, FlushResult, SecretSource, TokenSource, Transport, plain_context
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.values import redact_url

live_clients = _live.live_clients

if TYPE_CHECKING:
    from types import TracebackType

    from databricks_nats.transport.stream import StreamReport

__all__ = [
    "Client",
    "NoopPublisher",
    "adopt",
    "build_transport",
    "configure",
    "current_client",
    "default_context",
    "default_secrets",
    "live_clients",
    "make_encoder",
    "on_reconfigure",
    "set_current_client",
]

log = logging.getLogger("databricks_nats")

EmitItem = tuple[str, Mapping[str, Any] | None] | tuple[str, Mapping[str, Any] | None, int]
"""What ``emit_many`` takes: ``(event_type, data)``, or ``(event_type, data, time_ns)`` for an earlier event."""


class _Given:
    """A ``ContextProvider`` that knows the context already (a listener shipped with the one it was made with)."""

    def __init__(self, context: Mapping[str, Any] | None) -> None:
        self._context = dict(context) if context else None

    def detect(self, settings: Settings) -> tuple[Settings, dict[str, Any]]:
        return settings, (dict(self._context) if self._context else plain_context(settings))


def _checked(event_type: str, data: Any) -> Any:
    """The catalogued type of a well-formed event type; raise on a malformed type or on data not a mapping."""
    etype = catalog.lookup(event_type)
    if data is not None and type(data) is not dict and not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping, got {type(data).__name__}")
    return etype


def _cap(transport: Transport) -> int:
    settings = getattr(transport, "settings", None)
    return settings.max_event_bytes if settings is not None else 8192  # a stand-in transport without settings


class Client:
    """One publisher and its settings: ``emit``, ``emit_many``, ``flush``, ``stats``, ``ensure_stream``, ``close``.

    ``settings``, or keyword settings resolved like ``configure``'s (keyword > ``DATABRICKS_NATS_*`` >
    settings file > Spark conf > defaults). ``context`` finds where the process runs (default: Databricks
    detection); ``secrets`` reads secret scopes (default: Databricks secret scopes); ``identity`` gets the
    identity token when ``oidc_token`` or ``aws_iam`` is set (default: the source they name); ``transport`` stands in
    for the publisher (``testing.Capture``, a test's own). The publisher starts on first use; ``close``
    flushes and stops it (a later use starts a new one). Usable as a context manager.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        context: ContextProvider | None = None,
        secrets: SecretSource | None = None,
        identity: TokenSource | None = None,
        transport: Transport | None = None,
        **overrides: Any,
    ) -> None:
        if settings is not None and overrides:
            raise TypeError("Client() takes a Settings or keyword settings, not both")
        resolved = settings if settings is not None else resolve_settings(**overrides)
        self.context_provider: ContextProvider = context if context is not None else default_context()
        self.secrets: SecretSource = secrets if secrets is not None else default_secrets()
        self.identity = identity
        self._settings, self.context = self.context_provider.detect(resolved)
        self._lock = threading.RLock()
        self._transport: Transport | None = None
        self._failures = Failures()
        self._implicit = False  # made by current_client() from the environment: adopt() may replace it
        self._replaced = False  # no longer the default: a late use goes to the default client instead
        self._heartbeat: Any = None  # health.Heartbeat while a real publisher runs
        if transport is not None:
            self.swap_transport(transport)

    # ---- state -------------------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings in effect: those of the publisher in place (a swapped-in one's), else the client's."""
        found: Settings | None = getattr(self._transport, "settings", None)
        return found if found is not None else self._settings

    @property
    def transport(self) -> Transport | None:
        """The publisher, or None while none runs (before the first use, after ``close``)."""
        return self._transport

    def start(self) -> Transport:
        """The publisher, started now if it is not running (``configure`` does, so bad settings fail there)."""
        t = self._transport
        if t is not None:
            return t
        if self._replaced:  # a stale reference to a default client that configure() replaced
            return current_client().start()
        with self._lock:
            if self._transport is None:
                self._transport = build_transport(
                    self._settings, self.context, secrets=self.secrets, identity=self.identity
                )
                _live.add(self)
                interval = float(getattr(self._settings, "health_interval", 0) or 0)
                if interval > 0 and hasattr(self._transport, "stats_"):  # a real publisher, not a stand-in
                    from databricks_nats.health import Heartbeat

                    self._heartbeat = Heartbeat(self, interval)
            return self._transport

    def swap_transport(self, transport: Transport | None) -> Transport | None:
        """Put ``transport`` in place of the publisher (neither is closed); return the previous one."""
        with self._lock:
            old, self._transport = self._transport, transport
            if transport is not None:
                _live.add(self)
            return old

    # ---- publishing --------------------------------------------------------------------------------

    def fail(self, e: Exception, what: str) -> None:
        """A publishing failure: raised in strict mode, else logged (a warning once per kind) and counted."""
        t = self._transport
        if self.settings.strict:
            if isinstance(e, DatabricksNatsError):
                raise e
            raise PublishError(f"{what}: {type(e).__name__}: {e}") from e
        text = self._failures.log(e, what, t)
        counters = getattr(t, "stats_", None)
        if counters is not None:
            counters.dropped["invalid"] += 1
            counters.error("emit", text)

    def emit(
        self,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        keys: Any = None,
        dataref: str | None = None,
        causation: Causation | None = None,
        id: str | None = None,
        time_ns: int | None = None,
    ) -> Event | None:
        """Publish an event without blocking; return it, or None when it could not be created (fail-open).

        ``event_type`` is ``<source>.<entity>.<action>``; catalogued types take their subject keys from
        ``data``, custom types from ``keys``. ``dataref`` is the event's main pointer URI. ``data`` is
        captured now (a JSON-safe copy): changing it after the call does not change the event. ``causation``
        names the event this one reacts to (default: the one being handled here, ``caused_by``). ``id`` fixes
        the event's id (its ``Nats-Msg-Id``): two publishers of one fact that derive the same id
        (``databricks_nats.model.ids.derived_id``) have it stored once by the stream's de-duplication.
        ``time_ns``: when it happened (nanoseconds since the epoch), if not now: an event described later.
        """
        try:
            etype = _checked(event_type, data)  # refused before any publisher starts
            transport = self._transport
            if transport is None:
                transport = self.start()
            if dataref is not None and type(dataref) is not str:
                dataref = str(dataref)  # a Path, a URL object…
            snapshot = jsonsafe.snapshot(data, _cap(transport), etype)
            event = new_event(
                event_type, snapshot, keys=keys, dataref=dataref, causation=causation, id=id, time_ns=time_ns
            )
            transport.emit(event)
            return event
        except Exception as e:  # noqa: BLE001 - fail-open: training code never sees publishing errors
            self.fail(e, f"emit({event_type!r})")
            return None

    def emit_many(self, items: Iterable[EmitItem]) -> int:
        """Publish ``(event_type, data)`` pairs in one hand-over to the publisher; return how many it took.

        An item may carry a third member, the event's time in nanoseconds since the epoch, when it happened
        before the hand-over (a batch). One that cannot become an event is refused as ``emit`` refuses it
        (fail-open); the others go.
        """
        try:
            transport = self._transport
            if transport is None:
                transport = self.start()
            cap = _cap(transport)
        except Exception as e:  # noqa: BLE001 - fail-open
            self.fail(e, "emit_many()")
            return 0
        events: list[Event] = []
        for event_type, data, *when in items:
            try:
                snapshot = jsonsafe.snapshot(data, cap, _checked(event_type, data))
                events.append(new_event(event_type, snapshot, time_ns=when[0] if when else None))
            except Exception as e:  # noqa: BLE001 - fail-open, per event
                self.fail(e, f"emit({event_type!r})")
        if not events:
            return 0
        try:
            many = getattr(transport, "emit_many", None)
            if many is not None:
                many(events)
            else:  # a stand-in transport that takes one event at a time
                for event in events:
                    transport.emit(event)
        except Exception as e:  # noqa: BLE001 - fail-open
            self.fail(e, "emit_many()")
            return 0
        return len(events)

    def flush(self, timeout: float = 10.0) -> FlushResult:
        """Wait until every event emitted before the call is acknowledged; in strict mode raise on timeout."""
        result = self.start().flush(timeout)
        if not result.ok and self.settings.strict:
            raise FlushTimeout(result.pending, timeout)
        return result

    def stats(self) -> dict[str, Any]:
        """Counters and gauges of the publisher (see README "Stats"), and the live event families."""
        from databricks_nats.status import families

        return {**self.start().stats(), "families": families()}

    def close(self, timeout: float = 5.0) -> FlushResult:
        """Flush for at most ``timeout`` seconds and stop the publisher; unacked events stay spooled."""
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None and self._transport is not None:
            heartbeat.stop("closed")  # system.publisher.stopped, flushed with the rest
        with self._lock:
            t, self._transport = self._transport, None
            _live.discard(self)
        return t.close(timeout) if t is not None else FlushResult(True, 0)

    def ensure_stream(self, *, update: bool = False, timeout: float = 10.0) -> StreamReport:
        """Create or check the JetStream stream of this client's namespace; raise StreamMismatch when it differs.

        Uses a short-lived connection of its own: it works before (or without) the publisher.
        """
        import nats

        from databricks_nats.transport.auth import auth_options
        from databricks_nats.transport.loop import run_sync
        from databricks_nats.transport.stream import ensure_stream_async

        settings, secrets = self.settings, self.secrets
        identity = self.identity if self.identity is not None else default_identity(settings)

        async def run() -> StreamReport:
            try:
                nc = await nats.connect(
                    list(settings.url),
                    connect_timeout=settings.connect_timeout,
                    allow_reconnect=False,
                    **auth_options(settings, secrets=secrets, identity=identity),
                )
            except Exception as e:
                raise StreamError(f"cannot connect to NATS at {settings.url}: {type(e).__name__}") from e
            try:
                return await ensure_stream_async(nc.jetstream(), settings, update=update)
            finally:
                await nc.close()

        report: StreamReport = run_sync(run(), timeout)
        return report

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close(self.settings.exit_flush_timeout)

    def __repr__(self) -> str:
        s = self.settings
        urls = ", ".join(redact_url(u) for u in s.url)
        return f"Client(url={urls!r}, namespace={s.namespace!r}, started={self._transport is not None})"

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's publisher (its thread did not survive); a new one starts lazily."""
        self._lock = threading.RLock()
        self._heartbeat = None  # its thread did not survive either; a new publisher starts a new one
        t, self._transport = self._transport, None
        forget = getattr(t, "_spool_forget_after_fork", None)
        if forget is not None:
            forget()


# ---- the default client: what the module functions and the integrations use -------------------------------

_lock = threading.RLock()
_default: Client | None = None
_callbacks: list[Callable[[Client], None]] = []


def current_client() -> Client:
    """The default client, made on first use from the process configuration (environment, file, Spark conf)."""
    global _default
    client = _default
    if client is not None:
        return client
    with _lock:
        if _default is not None:
            return _default
        client = _default = Client()
        client._implicit = True
    _notify(client)
    return client


def default_client() -> Client | None:
    """The default client if there is one (None: ``current_client()`` would make it)."""
    return _default


def set_current_client(client: Client | None) -> Client | None:
    """Make ``client`` the default (None: made again from the configuration on next use); return the previous.

    Neither is closed. Callbacks registered with ``on_reconfigure`` learn about the new default client
    (with None, about the one ``current_client()`` makes next).
    """
    global _default
    with _lock:
        previous, _default = _default, client
    if client is not None:  # else the callbacks hear of the one current_client() makes next
        _notify(client)
    return previous


def configure(**settings: Any) -> Settings:
    """Replace the default client with one for these settings, closing the old publisher; return the settings.

    Keyword arguments override ``DATABRICKS_NATS_*`` variables, which override Spark conf. Raises
    ConfigurationError on bad settings, leaving the default client as it was.
    """
    global _default
    client = Client(**settings)
    with _lock:
        old, _default = _default, None  # meanwhile current_client() waits for the new one
        try:
            if old is not None:  # closed before the new publisher opens its spool (the same namespace: the same files)
                old._replaced = True
                old.close(timeout=min(5.0, client.settings.exit_flush_timeout))
            client.start()
        finally:
            _default = client
    _notify(client)
    return client.settings


def adopt(settings: Settings, context: Mapping[str, Any] | None = None) -> bool:
    """Publish with these settings unless this process publishes already; return whether they were adopted.

    For a listener shipped to a process of its own (Spark Connect runs it next to the server): it brings its
    settings and context, but a process that configured or started its default client keeps it.
    """
    global _default
    with _lock:
        have = _default
        if have is not None and not (have._implicit and have.transport is None):
            return False
        client = Client(settings, context=_Given(context))
        client.start()
        if have is not None:
            have._replaced = True
        _default = client
    _notify(client)
    return True


def on_reconfigure(callback: Callable[[Client], None]) -> Callable[[], None]:
    """Run ``callback(client)`` with every new default client (configured, swapped in, or made on first use
    after a reset); return a function that unsubscribes."""
    with _lock:
        _callbacks.append(callback)

    def unsubscribe() -> None:
        with _lock:
            if callback in _callbacks:
                _callbacks.remove(callback)

    return unsubscribe


def _notify(client: Client) -> None:
    with _lock:
        callbacks = list(_callbacks)
    for callback in callbacks:
        try:
            callback(client)
        except Exception as e:  # noqa: BLE001 - an integration's callback never breaks configure
            log.warning("databricks-nats: a reconfigure callback failed: %s: %s", type(e).__name__, e)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
