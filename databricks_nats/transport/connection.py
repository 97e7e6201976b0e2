"""The publisher's connection lifecycle: connect (retried forever), reconnect, stream check, server errors.

Credentials come from a ``CredentialProvider`` (``auth.py``): nats-py reads them through callbacks at every
reconnect; on a disconnect or an authorization error they are re-resolved (at most every
``credentials_ttl``), and when what nats-py binds per connection changed (NKey, TLS) — or the server closed
the connection for good — the connection is replaced by a new one (``_restart``).

``Publisher`` inherits this; it owns the state (settings, stats, in-flight events) and provides the queue
operations used here (``_requeue``, ``_save``, ``_drop_acked``, ``_on_ack``). Everything runs on the
worker's event loop; nats-py is imported there, never on the caller's import path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from databricks_nats.settings import Settings
from databricks_nats.transport.spool import Record
from databricks_nats.transport.stats import RateLimitedLog, Stats

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from databricks_nats.transport.auth import CredentialProvider
    from databricks_nats.transport.stream import StreamReport

__all__ = ["ConnectionLifecycle"]

_STABLE = 10.0  # seconds a connection must last for the next restart to start again from the shortest wait
_RESTART_MIN, _RESTART_MAX = 0.1, 5.0  # restarts after short-lived connections: capped exponential, jittered
_PERMISSION = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)
_AUTH = re.compile(r"authori[sz]ation (violation|failed)|authentication (expired|revoked)", re.IGNORECASE)


class ConnectionLifecycle:
    """Connects, tracks the connection state, provisions the stream and handles the server's errors."""

    settings: Settings
    stats_: Stats
    _say: RateLimitedLog
    _nc: NATS | None
    _connected: bool
    _closing: bool
    _stream_checked: bool
    _reply_prefix: str
    _max_bytes: int
    stream_report: StreamReport | None
    _inflight: OrderedDict[int, tuple[Record, float]]
    _connector: asyncio.Task[None]
    # Set by the lifecycle itself (class defaults, so the publisher's constructor needs no change):
    _credentials: CredentialProvider | None = None
    _connecting: NATS | None = None
    _background: set[asyncio.Task[None]] | None = None
    _generation = 0  # bumped per connection; callbacks of older connections are ignored
    _up_since: float | None = None  # when the current connection was established (monotonic)
    _restart_wait = 0.0  # the wait before the next restart's connect (0: none yet)
    _learned_payload: int | None = None  # a max_payload lower than announced, learned from a refusal
    _dead: set[int]
    _max_payload: int
    _max_control: int
    _fast_subject: int

    def _requeue(self, seqs: list[int]) -> None: ...
    def _save(self) -> None: ...
    def _drop_acked(self, seqs: list[int], reason: str) -> None: ...
    async def _on_ack(self, msg: Msg) -> None: ...

    async def _no_stream(self) -> None:
        """No stream listens on our subjects: create it once per connection when allowed (``auto_create_stream``).

        Otherwise (or when creating it failed) the events stay in flight and spooled, re-sent by the ack timer
        every ``ack_timeout`` until a stream appears; each refusal is counted (``errors.no_stream``).
        """
        if self._stream_checked or not self.settings.auto_create_stream:
            self.stats_.error("no_stream", f"no JetStream stream for {self.settings.namespace}.>")
            self._say(
                logging.WARNING,
                "no_stream",
                "databricks-nats: no JetStream stream stores %s.>%s; events are kept in the spool",
                self.settings.namespace,
                "" if self.settings.auto_create_stream else " and auto_create_stream is off",
            )
            return
        self._stream_checked = True
        await self._ensure_stream(initial=False)
        self._requeue(list(self._inflight))

    def _guard(self, gen: int, fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """A nats-py callback that is ignored once its connection was replaced (see ``_restart``)."""

        async def cb(*args: Any) -> None:
            if gen == self._generation:
                await fn(*args)

        return cb

    async def _connect_forever(self, wait: float = 0.0) -> None:
        from nats.aio.client import Client

        from databricks_nats.transport.auth import CredentialProvider

        if self._credentials is None:
            self._credentials = CredentialProvider(self.settings)
        if wait:  # a restart after a short-lived connection: never a reconnect loop at full speed
            await asyncio.sleep(wait * (0.5 + random.random()))
        delay = 0.1
        while not self._closing:
            self._generation += 1
            gen = self._generation
            nc = self._connecting = Client()
            try:
                await self._credentials.refresh_async()
                await nc.connect(
                    list(self.settings.url),
                    name=self.settings.client_name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=self.settings.connect_timeout,  # type: ignore[arg-type]  # float works
                    error_cb=self._guard(gen, self._on_error),
                    disconnected_cb=self._guard(gen, self._on_disconnect),
                    reconnected_cb=self._guard(gen, self._on_reconnect),
                    closed_cb=self._guard(gen, self._on_closed),
                    **self._credentials.connect_options(),
                )
            except Exception as e:  # noqa: BLE001 - retried with backoff while events keep spooling
                self.stats_.connection = "disconnected"
                self.stats_.error("connect", f"{type(e).__name__}: {e}")
                self._say(
                    logging.WARNING,
                    "connect",
                    "databricks-nats: cannot connect to NATS (%s); retrying, events are spooled",
                    type(e).__name__,
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
                continue
            self._connecting = None
            self._nc = nc
            self.stats_.connects += 1
            if self.settings.mode == "jetstream":
                self._reply_prefix = f"{nc.new_inbox()}."
                await nc.subscribe(self._reply_prefix + "*", cb=self._on_ack)
                if self.settings.auto_create_stream:
                    await self._ensure_stream(initial=True)
            self._set_limits()
            self._set_connected(True)
            return

    def _set_limits(self) -> None:
        """What one message may take on this server: ``max_payload`` from its INFO (headers included), the
        control line (``MAX_CONTROL_LINE`` or lower once refused); the event size cap leaves room for headers."""
        from databricks_nats.transport.delivery import FAST_ID, HEADER_BYTES

        nc = self._nc
        if nc is None:
            return
        announced = nc.max_payload
        self._max_payload = announced if self._learned_payload is None else min(announced, self._learned_payload)
        self._max_bytes = min(self.settings.max_event_bytes, max(256, self._max_payload - HEADER_BYTES - FAST_ID))
        sizes = 2 * len(str(self._max_payload)) + 3  # the two sizes and the three spaces of HPUB's arguments
        self._fast_subject = self._max_control - len(self._reply_prefix) - 20 - sizes

    def _learn_refusal(self, nc: NATS | None) -> None:
        """The server closed the connection refusing a message's shape (``-ERR``): learn the limit it has.

        The server refuses the first message over its limit, so the largest in-flight message exceeds it: the
        limit becomes one below it. That event (and any as large) is dead-lettered at its next attempt.
        """
        from databricks_nats.transport.delivery import HEADER_BYTES

        text = str(getattr(nc, "last_error", None) or "")
        lowered = text.lower()
        if "control line" in lowered:
            kind = "control_line"
        elif "maximum payload" in lowered:
            kind = "too_large"
        else:
            return
        largest = 0
        for seq, (rec, _) in self._inflight.items():
            header = HEADER_BYTES + len(rec.id.encode())
            total = header + len(rec.payload)
            if kind == "too_large":
                largest = max(largest, total)
            else:
                reply = len(self._reply_prefix) + len(str(seq)) if self.settings.mode == "jetstream" else 0
                largest = max(largest, len(rec.subject.encode()) + reply + len(str(header)) + len(str(total)) + 3)
        self.stats_.error("server_refused", f"{text} (largest message in flight: {largest} bytes)")
        if not largest:
            return
        if kind == "too_large":
            self._learned_payload = (
                largest - 1 if self._learned_payload is None else min(self._learned_payload, largest - 1)
            )
        else:
            self._max_control = min(self._max_control, largest - 1)
        self._say(
            logging.WARNING,
            "server_refused",
            "databricks-nats: NATS refused a message (%s); what is that large is dead-lettered from now on",
            text,
        )

    def _restart(self, why: str) -> None:
        """Replace the connection (or the attempt) with a new one built from the current credentials."""
        if self._closing:
            return
        self._say(logging.INFO, "restart", "databricks-nats: reconnecting to NATS (%s)", why)
        self._generation += 1  # callbacks of the old client are ignored from now on
        old = [c for c in (self._nc, self._connecting) if c is not None]
        self._nc = self._connecting = None
        if self._connected:
            self._set_connected(False)
            self._save()
        self.stats_.connection = "connecting"
        lived = time.monotonic() - self._up_since if self._up_since is not None else 0.0
        self._up_since = None
        if lived >= _STABLE or not self._restart_wait:
            self._restart_wait = _RESTART_MIN
        else:  # the last connection did not last: wait longer each time (capped), jittered in _connect_forever
            self._restart_wait = min(_RESTART_MAX, self._restart_wait * 2)
        connector = getattr(self, "_connector", None)
        if connector is not None and not connector.done():
            connector.cancel()

        async def close_old() -> None:
            for c in old:
                with contextlib.suppress(Exception):  # a half-open or broken client may fail to close
                    await asyncio.wait_for(c.close(), 2)

        self._spawn(close_old())
        self._connector = asyncio.get_running_loop().create_task(self._connect_forever(self._restart_wait))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background task on the loop, holding a reference until it is done."""
        if self._background is None:
            self._background = set()
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _recheck_credentials(self, gen: int, why: str) -> None:
        """Re-resolve credentials when stale; reconnect ourselves when nats-py cannot apply the change."""
        assert self._credentials is not None
        before = self._credentials.current
        await self._credentials.refresh_async()
        if gen == self._generation and self._credentials.needs_new_connection(before):
            self._restart(f"{why}; credentials changed")

    async def _ensure_stream(self, initial: bool) -> None:
        from databricks_nats.transport.stream import ensure_stream_async

        assert self._nc is not None
        try:
            self.stream_report = await ensure_stream_async(self._nc.jetstream(), self.settings, check=False)
            if self.stream_report.action == "differs":
                self._say(
                    logging.WARNING,
                    "stream_differs",
                    "databricks-nats: stream %s differs from settings: %s",
                    self.stream_report.name,
                    self.stream_report.differences,
                )
        except Exception as e:  # noqa: BLE001 - no permission to manage streams is a normal set-up
            self.stats_.error("stream", str(e))
            if not initial:
                self._say(logging.WARNING, "stream", "databricks-nats: %s", e)

    def _set_connected(self, up: bool) -> None:
        self._connected = up
        self.stats_.connection = "connected" if up else "disconnected"
        if up:
            self._up_since = time.monotonic()
            self._set_limits()  # a reconnect may reach another server, with other limits
            self._stream_checked = False
            self._requeue(list(self._inflight))  # acks may be lost; the stream drops duplicates

    async def _on_disconnect(self) -> None:
        if self._nc is not None and not self._closing:
            self._set_connected(False)
            self._save()
            self._say(logging.WARNING, "disconnect", "databricks-nats: disconnected from NATS; events are spooled")
            self._spawn(self._recheck_credentials(self._generation, "disconnected"))

    async def _on_reconnect(self) -> None:
        self._set_connected(True)
        self._say(logging.INFO, "reconnect", "databricks-nats: reconnected to NATS")

    async def _on_closed(self) -> None:
        self._connected = False
        self.stats_.connection = "closed"
        if not self._closing:  # the server closed us for good (a refused message, credentials revoked): start over
            self._learn_refusal(self._nc or self._connecting)
            self._restart("the server closed the connection")

    async def _on_error(self, e: Exception) -> None:
        text = str(e)
        self.stats_.error("nats", f"{type(e).__name__}: {text}")
        denied = _PERMISSION.search(text)
        if _AUTH.search(text):
            source = self._credentials.current.describe() if self._credentials else "none"
            self.stats_.error("auth", f"NATS refused the credentials ({source})")
            self._say(
                logging.ERROR,
                "auth",
                "databricks-nats: NATS refused the credentials (%s); re-resolving them, events are spooled",
                source,
            )
            self._spawn(self._recheck_credentials(self._generation, "authorization"))
        elif denied:
            subject = denied.group(1)
            seqs = [seq for seq, (rec, _) in self._inflight.items() if rec.subject == subject]
            self._say(
                logging.ERROR,
                "permission",
                "databricks-nats: NATS refused publish to %s (permissions); "
                "events for it are dropped: check the user's publish permissions",
                subject,
            )
            self._drop_acked(seqs, "permission_denied")
            self.stats_.errors["permission_denied"] += 1
        else:
            self._say(logging.WARNING, "nats_error", "databricks-nats: NATS error: %s", type(e).__name__)
