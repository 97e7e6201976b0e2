"""The publisher's connection lifecycle: connect (retried forever), reconnect, stream check, server errors.

``Publisher`` inherits this; it owns the state (settings, stats, in-flight events) and provides the queue
operations used here (``_requeue``, ``_save``, ``_drop_acked``, ``_on_ack``). Everything runs on the
worker's event loop; nats-py is imported there, never on the caller's import path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections import OrderedDict
from typing import TYPE_CHECKING

from databricks_nats.settings import Settings
from databricks_nats.transport.spool import Record
from databricks_nats.transport.stats import RateLimitedLog, Stats

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from databricks_nats.transport.stream import StreamReport

__all__ = ["ConnectionLifecycle"]

_PERMISSION = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)


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

    def _requeue(self, seqs: list[int]) -> None: ...
    def _save(self) -> None: ...
    def _drop_acked(self, seqs: list[int], reason: str) -> None: ...
    async def _on_ack(self, msg: Msg) -> None: ...

    async def _no_stream(self) -> None:
        """No stream listens on our subjects: create it once per connection when allowed."""
        if self._stream_checked:
            self.stats_.error("no_stream", f"no JetStream stream for {self.settings.namespace}.>")
            return
        self._stream_checked = True
        await self._ensure_stream(initial=False)
        self._requeue(list(self._inflight))

    async def _connect_forever(self) -> None:
        import nats

        from databricks_nats.transport.auth import auth_options

        delay = 0.1
        while not self._closing:
            try:
                nc = await nats.connect(
                    list(self.settings.url),
                    name=self.settings.client_name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=self.settings.connect_timeout,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnect,
                    reconnected_cb=self._on_reconnect,
                    closed_cb=self._on_closed,
                    **auth_options(self.settings),
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
            self._nc = nc
            self.stats_.connects += 1
            # Headers and the reply subject ride in the same message: keep 1 KiB for them.
            self._max_bytes = min(self.settings.max_event_bytes, max(1024, nc.max_payload - 1024))
            if self.settings.mode == "jetstream":
                self._reply_prefix = f"{nc.new_inbox()}."
                await nc.subscribe(self._reply_prefix + "*", cb=self._on_ack)
                if self.settings.auto_create_stream:
                    await self._ensure_stream(initial=True)
            self._set_connected(True)
            return

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
            self._stream_checked = False
            self._requeue(list(self._inflight))  # acks may be lost; the stream drops duplicates

    async def _on_disconnect(self) -> None:
        if self._nc is not None and not self._closing:
            self._set_connected(False)
            self._save()
            self._say(logging.WARNING, "disconnect", "databricks-nats: disconnected from NATS; events are spooled")

    async def _on_reconnect(self) -> None:
        self._set_connected(True)
        self._say(logging.INFO, "reconnect", "databricks-nats: reconnected to NATS")

    async def _on_closed(self) -> None:
        self._connected = False
        self.stats_.connection = "closed"

    async def _on_error(self, e: Exception) -> None:
        text = str(e)
        self.stats_.error("nats", f"{type(e).__name__}: {text}")
        denied = _PERMISSION.search(text)
        if denied:
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
