"""The background publisher: a daemon thread owning an asyncio loop, fed by a non-blocking ``emit``.

Flow of one event (each step a method call, named by the part that owns it)::

    emit() ─► Ingest.put ─► inbox ──(one call_soon_threadsafe per burst)──► Publisher._on_wake
      ─► Buffer.fill ─► Ingest.encode ─► record ─► Buffer.ready ──(─► spool after 50 ms: Buffer.save)
      ─► Publisher._send_forever ─► Sender.send_some ─► wire.frame ─► Link.write ─► nats-py ─► socket
      ─► ack: nats-py's parser ─► Sender.plain_ack (wire.take_plain_acks; others: Sender.on_ack)
      ─► Sender.settle ─► Buffer.done ─► (spool row deleted) ─► Sender.update_flushers ─► flush() returns

The parts, each owning its state and tested alone (tests/transport/test_parts.py):

* ``Ingest`` (``ingest.py``): the inbox and its cap, encoding, sequence numbers, flush boundaries;
  ``spool_sync="immediate"`` writes through to the spool in the caller's thread.
* ``Buffer`` (``storage.py``): the ready queue, write-behind, spill and refill, the live lane (a backlog
  on disk never starves new events), adoption of dead peers' spools, the drops a flush reports.
* ``Sender`` (``delivery.py``): the in-flight window, acks, core flushes, ack timeouts, flush waiters,
  dead letters (``poison.py``).
* ``Link`` (``connection.py``): connect, reconnect, the server's limits, the stream check, credentials
  (``auth.py``, given the injected secret source), nats-py's callbacks.

The publisher wires them, owns the thread, the loop and the send loop. Guarantees:

* The caller only appends to a deque and, when the loop is not already woken, schedules one wake-up
  with ``call_soon_threadsafe`` (``emit_many``: one for the whole batch): no polling; an idle worker
  sleeps in ``select``.
* Every event not acknowledged within 50 ms is in the spool (write-behind: one row per burst); at most
  ``memory_max_events`` are also in memory, the rest are read back from disk when there is room
  (spill-to-disk backpressure). The spool is bounded by ``spool_max_bytes``: beyond it the oldest events
  are dropped and counted (``dropped.spool_full``).
* Core mode is fire-and-forget: while connected its events stay in memory (what does not fit waits in the
  inbox) and never touch the disk; while disconnected, and at shutdown, they are spooled like any other.
* JetStream: at most ``max_inflight`` publishes await an ack; an ack that does not come within
  ``ack_timeout`` (or a reconnect) sends the event again with the same ``Nats-Msg-Id``, so the stream
  stores it once; duplicate acks are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from databricks_nats.errors import ConfigurationError
from databricks_nats.model.events import Event
from databricks_nats.model.ids import uuid7_time_ms
from databricks_nats.ports import FlushResult
from databricks_nats.settings import Settings
from databricks_nats.transport.auth import require_identity_source, require_nkeys, require_secret_source
from databricks_nats.transport.connection import Link
from databricks_nats.transport.delivery import Sender
from databricks_nats.transport.ingest import Ingest
from databricks_nats.transport.spool import Spool, forked
from databricks_nats.transport.stats import RateLimitedLog, Stats
from databricks_nats.transport.storage import Buffer
from databricks_nats.transport.telemetry import start_telemetry, stop_telemetry

if TYPE_CHECKING:
    from databricks_nats.ports import SecretSource, TokenSource
    from databricks_nats.transport.stream import StreamReport

__all__ = ["FlushResult", "Publisher"]  # FlushResult's home is ports.py (the Transport contract)

log = logging.getLogger("databricks_nats")


def _preload(settings: Settings) -> None:
    """Import, in the caller's thread, everything the worker would otherwise import on its own.

    An import in the worker while the caller holds another import-time lock deadlocks both: MLflow's
    ``autolog()`` holds its post-import-hook lock while importing flavours, and its import finder needs
    that lock, so ``configure()`` then ``autolog()`` hung (tests/faults/test_r1_training_outage.py).
    The injected secret source imports what it needs when it is built, not here.
    """
    import nats.aio.client
    import nats.errors
    import nats.js.api
    import nats.js.errors  # noqa: F401

    import databricks_nats.transport.auth
    import databricks_nats.transport.stream  # noqa: F401

    with contextlib.suppress(ImportError):  # the `nkeys` extra; required (at configure) only for NKey/.creds auth
        import nkeys  # noqa: F401


class Publisher:
    """One publisher (see the module docstring); ``emit`` may be called from any thread."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        encoder: Callable[..., tuple[str, bytes]],
        *,
        secrets: SecretSource | None = None,
        identity: TokenSource | None = None,
    ) -> None:
        try:  # NKey/.creds auth without the `nkeys` extra, secrets or an identity without a source: at configure
            require_nkeys(settings)
            require_secret_source(settings, secrets)
            require_identity_source(settings, identity)
        except ConfigurationError:
            spool.close()
            raise
        self.settings = settings
        self.secrets = secrets
        self.stats_ = stats = Stats()
        say = RateLimitedLog(log)
        self._spool = spool
        self._loop = loop = asyncio.new_event_loop()
        self._work = asyncio.Event()
        self._wake_scheduled = False
        self._closing = False
        immediate = getattr(settings, "spool_sync", "write-behind") == "immediate" or forked()
        if immediate and hasattr(spool, "writes_from_callers"):
            spool.writes_from_callers()  # no checkpoint (fsync) in emit(): the worker does them
        self._link = Link(settings, stats, say, secrets=secrets, identity=identity)
        self._ingest = Ingest(
            encoder, self._link.limits, spool, stats, say, cap=settings.queue_max_events, immediate=immediate
        )
        self._buffer = Buffer(settings, spool, self._ingest, stats, say, loop, wake=self._wake, work=self._work.set)
        self._sender = Sender(settings, self._buffer, self._link, stats, say, loop, work=self._work.set)
        self._buffer.sender = self._sender
        self._ingest.on_boundary = self._sender.wait_for
        self._link.sender, self._link.buffer = self._sender, self._buffer
        stats.source_at = settings.namespace.count(".") + 1
        self._telemetry = start_telemetry(settings, stats, self._gauges)
        self._started = threading.Event()
        _preload(settings)
        self._thread = threading.Thread(target=self._run, name="databricks-nats-publisher", daemon=True)
        self._thread.start()
        self._started.wait()

    @property
    def stream_report(self) -> StreamReport | None:
        return self._link.stream_report

    # ---- caller side (any thread) -------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Hand an event to the worker; never blocks and never raises."""
        if self._ingest.put(event) and not self._wake_scheduled:
            self._wake_threadsafe(1)

    def emit_many(self, events: Iterable[Event]) -> None:
        """Hand a batch of events to the worker with one wake-up; each counted as ``emit`` counts it."""
        n = self._ingest.put_many(events)
        if n and not self._wake_scheduled:
            self._wake_threadsafe(n)

    def _wake_threadsafe(self, n: int) -> None:
        self._wake_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._on_wake)
        except RuntimeError:  # loop closed: publisher shut down
            self.stats_.dropped["closed"] += n

    def flush(self, timeout: float = 10.0) -> FlushResult:
        """Block until every event emitted before this call is acknowledged, or ``timeout`` passes."""
        if self._closing or not self._thread.is_alive():
            return FlushResult(self._pending() == 0, self._pending())
        fut = asyncio.run_coroutine_threadsafe(self._flush(), self._loop)
        try:
            lost = fut.result(timeout)  # ok only when every event emitted before was acknowledged, none dropped
            return FlushResult(not lost, self._pending())
        except Exception:  # noqa: BLE001 - timeout (or loop stopped): report what is left
            fut.cancel()
            return FlushResult(False, max(1, self._pending()))

    def stats(self) -> dict[str, Any]:
        """Counters and gauges (see README "Stats")."""
        return self.stats_.snapshot(
            emitted=self._ingest.emitted(),
            queue_depth=len(self._ingest.inbox),
            in_memory=len(self._buffer.ready),
            inflight=len(self._sender),
            pending=self._pending(),
            spool_bytes=self._spool.size_bytes,
            oldest_unacked_age_s=self._oldest_age(),
            unsaved=len(self._buffer.unsaved),
            secured=self._buffer.secured,
            spool_durable=self._spool.durable,
            spool_path=self._spool.path,
            mode=self.settings.mode,
            namespace=self.settings.namespace,
        )

    def _gauges(self) -> dict[str, Any]:
        """The gauges telemetry reads when a metrics reader collects."""
        return {
            "queue_depth": len(self._ingest.inbox),
            "spool_bytes": self._spool.size_bytes,
            "oldest_unacked_age_s": self._oldest_age(),
        }

    def _oldest_age(self) -> float | None:
        """Seconds since the oldest event held in memory and not yet acked was created (None: none, or unknown).

        Read from the heads of the in-flight window, the ready queue and the inbox; an event id derived from a
        fact (UUIDv5) carries no time and is passed over."""
        heads: list[Any] = []
        for head in (
            lambda: next(iter(self._sender.inflight.values()))[0],
            lambda: self._buffer.ready[0],
            lambda: self._ingest.inbox[0],
        ):
            with contextlib.suppress(Exception):  # empty, or changed by the worker meanwhile: a racy read, no error
                heads.append(head())
        times = [t for t in map(_created_ms, heads) if t is not None]
        return round(max(0.0, time.time() - min(times) / 1000), 3) if times else None

    def close(self, timeout: float = 5.0) -> FlushResult:
        """Flush for at most ``timeout`` seconds, then stop the worker; unacked events stay spooled."""
        result = self.flush(timeout) if timeout > 0 else FlushResult(self._pending() == 0, self._pending())
        if self._closing:
            return result
        self._closing = self._ingest.closed = self._link.closing = self._buffer.closing = True
        stop_telemetry(self._telemetry)
        with contextlib.suppress(Exception):  # best effort: the loop may already be gone at exit
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(max(3.0, timeout))
        self._thread.join(max(1.0, timeout))
        return result

    def _pending(self) -> int:
        return len(self._ingest.inbox) + self._buffer.pending()

    # ---- worker side (loop thread) --------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._started.set)
        self._loop.call_soon(self._on_wake)
        self._link.start(self._loop)
        self._sending = self._loop.create_task(self._send_forever())
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _on_wake(self) -> None:
        self._wake_scheduled = False
        self._fill()
        self._work.set()

    def _wake(self) -> None:
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._loop.call_soon(self._on_wake)

    def _fill(self) -> None:
        """Inbox to memory; core mode while connected keeps its events in memory only (fire-and-forget)."""
        self._buffer.fill(volatile=self._link.connected and self.settings.mode == "core")

    async def _flush(self) -> bool:
        """Wait until every event handed over before the call is acknowledged (or flushed, in core mode).

        True when one of those events was dropped (``Buffer.lost_upto``).
        """
        fut: asyncio.Future[bool] = self._loop.create_future()
        self._ingest.wait(fut)
        self._fill()
        self._work.set()
        return await fut

    async def _send_forever(self) -> None:
        buffer, sender, link = self._buffer, self._sender, self._link
        while True:
            await self._work.wait()
            self._work.clear()
            if self._ingest.inbox:  # core mode may have left events there until memory had room
                self._fill()
            buffer.top_up()
            if link.connected and buffer.ready and not await sender.send_some():
                await asyncio.sleep(0.2)  # the connection is failing; its callbacks will say more
                self._work.set()

    async def _shutdown(self) -> None:
        self._closing = True
        await self._end_tasks([*self._link.tasks(), self._sending, *self._sender.stop()])
        self._link.connected = False  # whatever is left in the inbox goes to the spool
        while self._ingest.inbox:
            self._buffer.fill(volatile=False)
        self._buffer.close()
        await self._link.close()
        # Whatever nats-py (or a callback) still runs on this loop ends here too, before the loop closes.
        await self._end_tasks(asyncio.all_tasks() - {asyncio.current_task()})
        self._spool.close()
        self._loop.call_soon(self._loop.stop)

    @staticmethod
    async def _end_tasks(tasks: Iterable[asyncio.Future[Any]]) -> None:
        """Cancel these tasks and wait until every one has ended: no timed window a starved loop could miss.

        A task that swallows a cancellation is cancelled again (every second) until it ends — nats-py's
        ``connect`` does, when the cancellation lands in its retry loop's ``_close``. The loop is closed only
        after this returns, so asyncio never destroys a pending task ("Task was destroyed but it is pending").
        """
        running = {t for t in tasks if not t.done()}
        while running:
            for task in running:
                task.cancel()
            _, running = await asyncio.wait(running, timeout=1.0)

    def _spool_forget_after_fork(self) -> None:
        forget = getattr(self._spool, "forget_after_fork", None)
        if forget is not None:
            forget()


def _created_ms(item: Any) -> float | None:
    """When an in-memory event (an ``Event``, or a ``Record`` whose id is a UUIDv7) was created, in ms."""
    time_ns = getattr(item, "time_ns", None)
    if time_ns is not None:
        return float(time_ns) / 1e6
    event_id = getattr(item, "id", "")
    return float(uuid7_time_ms(event_id)) if len(event_id) == 36 and event_id[14] == "7" else None
