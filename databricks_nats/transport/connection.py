"""The publisher's link part: connect (retried forever), reconnect, the server's limits, stream check, errors.

Owns the nats-py client (``nc``, and the one being connected), whether it is up (``connected``), the reply
prefix JetStream acks come back on, the server's limits (``limits``, ``poison.py``), the credentials and
the stream report. Neighbours: the sender (``on_ack``, ``requeue_all``, ``in_flight``, ``drop_subject``)
and the buffer (``save``: a disconnect puts what is in memory on disk). The sender writes through it:
``write`` appends built frames to nats-py's output buffer (the fast path), ``publish`` is nats-py's own.

Credentials come from a ``CredentialProvider`` (``auth.py``, given the injected secret source): nats-py
reads them through callbacks at every reconnect; on a disconnect or an authorization error they are
re-resolved (at most every ``credentials_ttl``), and when what nats-py binds per connection changed (NKey,
TLS, an identity's token with its inbox prefix) — or the server closed the connection for good — the
connection is replaced by a new one (``restart``). An identity token is renewed ahead of its expiry and the
connection restarted with it (``_renew_identity``): what was in flight is sent again on the new connection and
the stream drops the duplicates (``Nats-Msg-Id``). When a server closes the connection for a control line or
a payload it refused (``-ERR``), the largest in-flight event is known to exceed its limit: the limit is lowered
to just below it, so that event (and any as large) is dead-lettered at its next attempt — one refusal per
distinct offending size at most, each restart backing off. Everything runs on the worker's event loop; nats-py
is imported there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from databricks_nats.settings import Settings
from databricks_nats.transport.poison import Limits
from databricks_nats.transport.spool import Record
from databricks_nats.transport.stats import RateLimitedLog, Stats
from databricks_nats.transport.wire import publish, take_plain_acks, writable, write

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from databricks_nats.ports import SecretSource, TokenSource
    from databricks_nats.transport.auth import Credentials
    from databricks_nats.transport.credential_provider import CredentialProvider
    from databricks_nats.transport.stream import StreamReport

__all__ = ["Link"]

_STABLE = 10.0  # seconds a connection must last for the next restart to start again from the shortest wait
_RESTART_MIN, _RESTART_MAX = 0.1, 5.0  # restarts after short-lived connections: capped exponential, jittered
_PERMISSION = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)
_AUTH = re.compile(r"authori[sz]ation (violation|failed)|authentication (expired|revoked)", re.IGNORECASE)


class Flight(Protocol):
    """What the link asks of the sender."""

    async def on_ack(self, msg: Msg) -> None: ...
    def plain_ack(self, subject: bytes | str) -> None: ...
    def requeue_all(self) -> None: ...
    def in_flight(self) -> Iterator[tuple[int, Record]]: ...
    def drop_subject(self, subject: str, reason: str) -> None: ...


class Saver(Protocol):
    def save(self) -> None: ...


class Link:
    """Connects, tracks the connection state, provisions the stream and handles the server's errors."""

    def __init__(
        self,
        settings: Settings,
        stats: Stats,
        say: RateLimitedLog,
        *,
        secrets: SecretSource | None = None,
        identity: TokenSource | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.identity = identity
        self.limits = Limits(settings.max_event_bytes)
        self.nc: NATS | None = None
        self.connected = False
        self.closing = False
        self.reply_prefix = ""
        self.fast = False  # nats-py's output buffer is the one ``write`` knows (set at connect)
        self.stream_report: StreamReport | None = None
        self.sender: Flight
        self.buffer: Saver
        self._stats, self._say = stats, say
        self._credentials: CredentialProvider | None = None
        self._in_use: Credentials | None = None  # what the current connection (or attempt) was built from
        self._connecting: NATS | None = None
        self._connector: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._generation = 0  # bumped per connection; callbacks of older connections are ignored
        self._up_since: float | None = None  # when the current connection was established (monotonic)
        self._restart_wait = 0.0  # the wait before the next restart's connect (0: none yet)
        self._stream_checked = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._connector = loop.create_task(self.connect_forever())

    def tasks(self) -> list[asyncio.Task[None]]:
        """The connector and background tasks (ended at shutdown)."""
        return [t for t in (self._connector, *self._background) if t is not None]

    async def close(self) -> None:
        self.closing = True
        self.connected = False
        if self.nc is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail in many ways
                await asyncio.wait_for(self.nc.close(), 2)

    # ---- the sender's side: writing -------------------------------------------------------------------

    async def write(self, frames: list[bytes]) -> None:
        """Built HPUB frames into nats-py's output buffer (the fast path, ``wire.write``)."""
        await write(self.nc, frames)

    async def publish(self, rec: Record, reply: str) -> None:
        """nats-py's own publish (the slow path: it validates, and refuses what it cannot write)."""
        await publish(self.nc, rec, reply)

    async def flush(self, timeout: float) -> None:
        assert self.nc is not None
        await self.nc.flush(timeout=timeout)  # type: ignore[arg-type]

    # ---- connecting -------------------------------------------------------------------------------------

    def _guard(self, gen: int, fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """A nats-py callback that is ignored once its connection was replaced (see ``restart``)."""

        async def cb(*args: Any) -> None:
            if gen == self._generation:
                await fn(*args)

        return cb

    async def connect_forever(self, wait: float = 0.0) -> None:
        from nats.aio.client import Client

        from databricks_nats.transport.credential_provider import CredentialProvider

        if self._credentials is None:
            self._credentials = CredentialProvider(self.settings, secrets=self.secrets, identity=self.identity)
            if self._credentials.identity is not None:
                self._spawn(self._renew_identity(self._credentials))
        if wait:  # a restart after a short-lived connection: never a reconnect loop at full speed
            await asyncio.sleep(wait * (0.5 + random.random()))
        delay = 0.1
        while not self.closing:
            self._generation += 1
            gen = self._generation
            nc = self._connecting = Client()
            try:
                await self._credentials.refresh_async()
                if self._credentials.last_error:  # connecting anyway: the server says no, and we retry
                    self._stats.error("credentials", self._credentials.last_error)
                self._in_use = self._credentials.current
                await nc.connect(
                    list(self.settings.url),
                    name=self.settings.client_name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=self.settings.connect_timeout,  # type: ignore[arg-type]  # float works
                    error_cb=self._guard(gen, self.on_error),
                    disconnected_cb=self._guard(gen, self.on_disconnect),
                    reconnected_cb=self._guard(gen, self.on_reconnect),
                    closed_cb=self._guard(gen, self.on_closed),
                    **self._credentials.connect_options(),
                )
            except Exception as e:  # noqa: BLE001 - retried with backoff while events keep spooling
                self._stats.connection = "disconnected"
                self._stats.error("connect", f"{type(e).__name__}: {e}")
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
            self.nc = nc
            self.fast = writable(nc)
            self._stats.connects += 1
            if self.settings.mode == "jetstream":
                self.reply_prefix = f"{nc.new_inbox()}."
                sub = await nc.subscribe(self.reply_prefix + "*", cb=self.sender.on_ack)
                if self.fast:
                    take_plain_acks(nc, getattr(sub, "_id", None), self.sender.plain_ack)
                if self.settings.auto_create_stream:
                    await self._ensure_stream(initial=True)
            self.set_connected(True)
            return

    def set_connected(self, up: bool) -> None:
        self.connected = up
        self._stats.connection = "connected" if up else "disconnected"
        if up:
            self._up_since = time.monotonic()
            if self.nc is not None:  # a reconnect may reach another server, with other limits
                self.limits.set(self.nc.max_payload, len(self.reply_prefix))
            self._stream_checked = False
            self.sender.requeue_all()  # acks may be lost; the stream drops duplicates

    def restart(self, why: str) -> None:
        """Replace the connection (or the attempt) with a new one built from the current credentials."""
        if self.closing:
            return
        self._say(logging.INFO, "restart", "databricks-nats: reconnecting to NATS (%s)", why)
        self._generation += 1  # callbacks of the old client are ignored from now on
        old = [c for c in (self.nc, self._connecting) if c is not None]
        self.nc = self._connecting = None
        if self.connected:
            self.set_connected(False)
            self.buffer.save()
        self._stats.connection = "connecting"
        lived = time.monotonic() - self._up_since if self._up_since is not None else 0.0
        self._up_since = None
        if lived >= _STABLE or not self._restart_wait:
            self._restart_wait = _RESTART_MIN
        else:  # the last connection did not last: wait longer each time (capped), jittered in connect_forever
            self._restart_wait = min(_RESTART_MAX, self._restart_wait * 2)
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()

        async def close_old() -> None:
            for c in old:
                with contextlib.suppress(Exception):  # a half-open or broken client may fail to close
                    await asyncio.wait_for(c.close(), 2)

        self._spawn(close_old())
        self._connector = asyncio.get_running_loop().create_task(self.connect_forever(self._restart_wait))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background task on the loop, holding a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _recheck_credentials(self, gen: int, why: str) -> None:
        """Re-resolve credentials when stale; reconnect ourselves when nats-py cannot apply the change."""
        assert self._credentials is not None
        before = self._in_use or self._credentials.current  # what the connection nats-py reconnects was built from
        await self._credentials.refresh_async()
        if gen == self._generation and self._credentials.needs_new_connection(before):
            self.restart(f"{why}; credentials changed")

    async def _renew_identity(self, provider: CredentialProvider) -> None:
        """Read a new identity token ahead of the current one's expiry and, once it differs from the one the
        connection presented, restart the connection with it: nats-py binds the token and its inbox prefix per
        connection (``auth.inbox_prefix``), and the NATS user the server gave for the old token ends with it.
        In-flight events are requeued by the new connection; the stream drops what it already has."""
        while not self.closing:
            await asyncio.sleep(min(max(provider.refresh_in(), 1.0), 30.0))
            if provider.refresh_in() <= 0:
                await provider.refresh_async(force=True)
                used = self._in_use
                if used is not None and not self.closing and provider.needs_new_connection(used):
                    self.restart("identity token renewed")

    # ---- the stream ---------------------------------------------------------------------------------------

    async def no_stream(self) -> None:
        """No stream listens on our subjects: create it once per connection when allowed (``auto_create_stream``).

        Otherwise (or when creating it failed) the events stay in flight and spooled, re-sent by the ack timer
        every ``ack_timeout`` until a stream appears; each refusal is counted (``errors.no_stream``).
        """
        if self._stream_checked or not self.settings.auto_create_stream:
            self._stats.error("no_stream", f"no JetStream stream for {self.settings.namespace}.>")
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
        self.sender.requeue_all()

    async def _ensure_stream(self, initial: bool) -> None:
        from databricks_nats.transport.stream import ensure_stream_async

        assert self.nc is not None
        try:
            self.stream_report = await ensure_stream_async(self.nc.jetstream(), self.settings, check=False)
            if self.stream_report.action == "differs":
                self._say(
                    logging.WARNING,
                    "stream_differs",
                    "databricks-nats: stream %s differs from settings: %s",
                    self.stream_report.name,
                    self.stream_report.differences,
                )
        except Exception as e:  # noqa: BLE001 - no permission to manage streams is a normal set-up
            self._stats.error("stream", str(e))
            if not initial:
                self._say(logging.WARNING, "stream", "databricks-nats: %s", e)

    # ---- nats-py's callbacks ------------------------------------------------------------------------------

    async def on_disconnect(self) -> None:
        if self.nc is not None and not self.closing:
            self.set_connected(False)
            self.buffer.save()
            self._say(logging.WARNING, "disconnect", "databricks-nats: disconnected from NATS; events are spooled")
            self._spawn(self._recheck_credentials(self._generation, "disconnected"))

    async def on_reconnect(self) -> None:
        self._stats.reconnects += 1
        self.set_connected(True)
        self._say(logging.INFO, "reconnect", "databricks-nats: reconnected to NATS")

    async def on_closed(self) -> None:
        self.connected = False
        self._stats.connection = "closed"
        if not self.closing:  # the server closed us for good (a refused message, credentials revoked): start over
            self.learn_refusal(str(getattr(self.nc or self._connecting, "last_error", None) or ""))
            self.restart("the server closed the connection")

    async def on_error(self, e: Exception) -> None:
        text = str(e)
        self._stats.error("nats", f"{type(e).__name__}: {text}")
        denied = _PERMISSION.search(text)
        if _AUTH.search(text):
            source = self._credentials.current.describe() if self._credentials else "none"
            self._stats.error("auth", f"NATS refused the credentials ({source})")
            self._say(
                logging.ERROR,
                "auth",
                "databricks-nats: NATS refused the credentials (%s); re-resolving them, events are spooled",
                source,
            )
            self._spawn(self._recheck_credentials(self._generation, "authorization"))
        elif denied:
            subject = denied.group(1)
            self._say(
                logging.ERROR,
                "permission",
                "databricks-nats: NATS refused publish to %s (permissions); "
                "events for it are dropped: check the user's publish permissions",
                subject,
            )
            self.sender.drop_subject(subject, "permission_denied")
            self._stats.errors["permission_denied"] += 1
        else:
            self._say(logging.WARNING, "nats_error", "databricks-nats: NATS error: %s", type(e).__name__)

    def learn_refusal(self, text: str) -> None:
        """The server closed the connection refusing a message's shape (``-ERR`` ``text``): learn its limit.

        The server refuses the first message over its limit, so the largest in-flight message exceeds it: the
        limit becomes one below it. That event (and any as large) is dead-lettered at its next attempt.
        """
        lowered = text.lower()
        if "control line" in lowered:
            kind = "control_line"
        elif "maximum payload" in lowered:
            kind = "too_large"
        else:
            return
        largest = 0
        jetstream = self.settings.mode == "jetstream"
        for seq, rec in self.sender.in_flight():
            reply = len(self.reply_prefix) + len(str(seq)) if jetstream else 0
            total, args = Limits.sizes(rec, reply)
            largest = max(largest, total if kind == "too_large" else args)
        self._stats.error("server_refused", f"{text} (largest message in flight: {largest} bytes)")
        if not largest:
            return
        self.limits.learn(kind, largest)
        self._say(
            logging.WARNING,
            "server_refused",
            "databricks-nats: NATS refused a message (%s); what is that large is dead-lettered from now on",
            text,
        )
