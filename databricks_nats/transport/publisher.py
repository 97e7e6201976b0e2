"""The background publisher: a daemon thread owning an asyncio loop, fed by a non-blocking ``emit``.

Flow of one event::

    emit() ── deque.append ──► inbox ──(loop woken once per burst)──► encode ─► memory (ready) ─► publish
    (JetStream: reply subject per event; core: a flush every 128 publishes, pipelined) ─► ack ─► done
                                              └─(not acked within 50 ms, or memory full)─► spool (SQLite)

* The caller only appends to a deque and, when the loop is not already woken, schedules one wake-up
  with ``call_soon_threadsafe``: no polling anywhere; an idle worker sleeps in ``select``.
* Every event not acknowledged within ``_SAVE_DELAY`` is in the spool (write-behind: one row per burst);
  at most ``memory_max_events`` are also in memory, the rest are read back from disk when there is room
  (spill-to-disk backpressure). The spool is bounded by ``spool_max_bytes``: beyond it the oldest events
  are dropped and counted (``dropped.spool_full``).
* Core mode is fire-and-forget: while connected its events stay in memory (what does not fit waits in the
  inbox) and never touch the disk; while disconnected, and at shutdown, they are spooled like any other.
* JetStream: at most ``max_inflight`` publishes await an ack; an ack that does not come within
  ``ack_timeout`` (or a reconnect) sends the event again with the same ``Nats-Msg-Id``, so the stream
  stores it once; duplicate acks are counted. Publishes yield to the loop every ``_YIELD_EVERY`` so the
  socket is written and acks are handled while sending (a pipeline); plain acks are settled in batches.
* The publisher is split by concern; each part is a mixin ``Publisher`` inherits, working on its state:
  ingest and spool (encode, write-behind, spill and refill) in ``storage.py``; delivery (publish, acks,
  core flushes, ack timeouts, ``flush`` waiters) in ``delivery.py``; the connection lifecycle (connect,
  reconnect, stream check, server errors) in ``connection.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from databricks_nats.errors import ConfigurationError
from databricks_nats.model.events import Event
from databricks_nats.settings import Settings
from databricks_nats.transport.auth import require_nkeys
from databricks_nats.transport.connection import ConnectionLifecycle
from databricks_nats.transport.delivery import MAX_CONTROL_LINE, Delivery
from databricks_nats.transport.spool import Record, Spool
from databricks_nats.transport.stats import RateLimitedLog, Stats
from databricks_nats.transport.storage import Storage


def _preload(settings: Settings) -> None:
    """Import, in the caller's thread, everything the worker would otherwise import on its own.

    An import in the worker while the caller holds another import-time lock deadlocks both: MLflow's
    ``autolog()`` holds its post-import-hook lock while importing flavours, and its import finder needs
    that lock, so ``configure()`` then ``autolog()`` hung (tests/faults/test_r1_training_outage.py).
    """
    import nats.aio.client
    import nats.errors
    import nats.js.api
    import nats.js.errors  # noqa: F401

    import databricks_nats.transport.auth
    import databricks_nats.transport.stream

    with contextlib.suppress(ImportError):  # the `nkeys` extra; required (at configure) only for NKey/.creds auth
        import nkeys  # noqa: F401

    if settings.secret_scope:
        with contextlib.suppress(ImportError):  # reported when the secret is read
            import databricks_nats.integrations.databricks.sdk  # noqa: F401


if TYPE_CHECKING:  # nats-py is imported at configure(), keeping it off ``import databricks_nats``
    from nats.aio.client import Client as NATS

__all__ = ["FlushResult", "Publisher"]

log = logging.getLogger("databricks_nats")


@dataclass(frozen=True)
class FlushResult:
    """The outcome of ``flush``: ``ok`` when everything emitted before it is acked; else what is pending."""

    ok: bool
    pending: int

    def __bool__(self) -> bool:
        return self.ok


class Publisher(Storage, Delivery, ConnectionLifecycle):
    """One process's publisher (see the module docstring); ``emit`` may be called from any thread."""

    def __init__(self, settings: Settings, spool: Spool, encoder: Callable[..., tuple[str, bytes]]) -> None:
        try:  # NKey/.creds auth without the `nkeys` extra fails here, at configure, not at every connect
            require_nkeys(settings)
        except ConfigurationError:
            spool.close()
            raise
        self.settings = settings
        self._spool = spool
        self._encode = encoder
        self._max_bytes = settings.max_event_bytes
        self.stats_ = Stats()
        self._say = RateLimitedLog(log)
        self._inbox: deque[Event] = deque()
        self._inbox_max = settings.queue_max_events
        self._wake_scheduled = False
        self._ingested = 0
        self._last_seq = spool.max_seq()  # replayed events count as emitted before any flush
        self._ready: deque[Record] = deque()
        self._inflight: OrderedDict[int, tuple[Record, float]] = OrderedDict()
        self._loaded_upto = 0
        self._spilled = spool.count() > 0  # events adopted from a dead process: a backlog on disk
        self._live: set[int] = set()  # live-lane sequences taken into memory while a backlog is on disk
        self._acked: list[int] = []
        self._acks: list[str] = []  # reply subjects of plain JetStream acks, settled once per loop iteration
        self._unflushed: list[int] = []  # core: published since the last flush
        self._flushing: set[asyncio.Task[None]] = set()  # core: flushes awaiting their PONG
        self._unsaved: dict[int, Record] = {}  # in memory, not yet on disk (write-behind, _SAVE_DELAY)
        self._save_timer: asyncio.TimerHandle | None = None
        self._secured = 0
        self._flushers: list[tuple[int, asyncio.Future[None]]] = []  # (last sequence to wait for, future)
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()  # (events ingested to wait for, future)
        self._dead: set[int] = set()
        self._max_payload = 1024 * 1024  # the server's, from its INFO at connect
        self._max_control = MAX_CONTROL_LINE
        self._fast_subject = 0  # set at connect, with the reply prefix
        self._nc: NATS | None = None
        self._reply_prefix = ""
        self._connected = False
        self._stream_checked = False
        self.stream_report = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._loop = asyncio.new_event_loop()
        self._work = asyncio.Event()
        self._started = threading.Event()
        _preload(settings)
        self._thread = threading.Thread(target=self._run, name="databricks-nats-publisher", daemon=True)
        self._thread.start()
        self._started.wait()

    # ---- caller side (any thread) -------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Hand an event to the worker; never blocks and never raises."""
        if len(self._inbox) >= self._inbox_max:
            self.stats_.dropped["queue_full"] += 1  # the worker is wedged; never grow without bound
            return
        if self._immediate:  # spool_sync="immediate" (or a forked child): on disk before returning (storage.py)
            self._persist(event)
        else:
            self._inbox.append(event)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._on_wake)
            except RuntimeError:  # loop closed: publisher shut down
                self.stats_.dropped["closed"] += 1

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
            emitted=self._ingested + len(self._inbox) + self.stats_.dropped["queue_full"],
            queue_depth=len(self._inbox),
            in_memory=len(self._ready),
            inflight=len(self._inflight),
            pending=self._pending(),
            spool_bytes=self._spool.size_bytes,
            unsaved=len(self._unsaved),
            secured=self._secured,
            spool_durable=self._spool.durable,
            spool_path=self._spool.path,
            mode=self.settings.mode,
            namespace=self.settings.namespace,
        )

    def close(self, timeout: float = 5.0) -> FlushResult:
        """Flush for at most ``timeout`` seconds, then stop the worker; unacked events stay spooled."""
        result = self.flush(timeout) if timeout > 0 else FlushResult(self._pending() == 0, self._pending())
        if self._closing:
            return result
        self._closing = True
        with contextlib.suppress(Exception):  # best effort: the loop may already be gone at exit
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(max(3.0, timeout))
        self._thread.join(max(1.0, timeout))
        return result

    def _pending(self) -> int:
        return len(self._inbox) + self._spool.count() + len(self._unsaved)

    # ---- worker side (loop thread) --------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._started.set)
        self._loop.call_soon(self._on_wake)
        self._connector = self._loop.create_task(self._connect_forever())
        self._sender = self._loop.create_task(self._send_forever())
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    # ---- the live lane: a backlog on disk never starves new events ------------------------------------

    def _ingest(self) -> None:
        """While a backlog waits on disk, new events take the live lane: into memory (when it has room),
        sent as soon as the backlog batch already read back (at most 1,000 events) is out, instead of
        behind the whole backlog. The backlog's read cursor (``_loaded_upto``) is kept; the live events
        that write-behind puts on disk meanwhile are skipped when the cursor reaches them (``_refill``).
        Immediate mode (events on disk before ``emit`` returns) keeps emit order.
        """
        if not self._spilled or self._immediate:
            Storage._ingest(self)
            return
        cursor, first = self._loaded_upto, self._last_seq + 1
        self._spilled = False  # room for the live lane is what memory has left (the backlog batch included)
        try:
            Storage._ingest(self)
        finally:
            kept_upto = self._loaded_upto if self._loaded_upto >= first else first - 1
            self._spilled = True
            self._loaded_upto = cursor
        if kept_upto >= first:  # memory-full spills (after these) stay on disk, read back in order
            self._live.update(range(first, kept_upto + 1))

    def _refill(self) -> None:
        """Read the backlog back (``Storage._refill``), skipping the live-lane events already in memory."""
        live = self._live
        if not live:
            Storage._refill(self)
            return
        ready = self._ready
        before = len(ready)
        Storage._refill(self)
        fresh = [ready.pop() for _ in range(len(ready) - before)]
        ready.extend(rec for rec in reversed(fresh) if rec.seq not in live)
        if not self._spilled:  # the backlog is read: no live-lane event is only on disk (each is in memory or done)
            self._loaded_upto = max(self._loaded_upto, max(live))  # behind the cursor, as Storage expects
            live.clear()

    def _on_wake(self) -> None:
        self._wake_scheduled = False
        self._ingest()
        self._work.set()

    def _wake(self) -> None:
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._loop.call_soon(self._on_wake)

    async def _shutdown(self) -> None:
        self._closing = True
        await self._end_tasks([self._connector, self._sender, *self._flushing, *(self._background or ())])
        if self._timer is not None:
            self._timer.cancel()
        if self._acked:
            self._commit_acks()
        self._connected = False  # whatever is left in the inbox goes to the spool
        while self._inbox:
            self._ingest()
        if self._save_timer is not None:
            self._save_timer.cancel()
        self._save()
        if self._nc is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail in many ways
                await asyncio.wait_for(self._nc.close(), 2)
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
