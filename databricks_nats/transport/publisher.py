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
* The connection lifecycle (connect, reconnect, stream check, server errors) is in ``connection.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from databricks_nats.model.events import CE_CONTENT_TYPE, Event, shrink
from databricks_nats.settings import Settings
from databricks_nats.transport.connection import ConnectionLifecycle
from databricks_nats.transport.spool import MemorySpool, Record, Spool
from databricks_nats.transport.stats import RateLimitedLog, Stats


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
    import nkeys  # noqa: F401

    import databricks_nats.transport.auth
    import databricks_nats.transport.stream

    if settings.secret_scope:
        with contextlib.suppress(ImportError):  # reported when the secret is read
            import databricks_nats.integrations.databricks.sdk  # noqa: F401


if TYPE_CHECKING:  # nats-py is imported at configure(), keeping it off ``import databricks_nats``
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

__all__ = ["FlushResult", "Publisher"]

log = logging.getLogger("databricks_nats")
_SAVE_DELAY = 0.05  # seconds an event may live only in memory; most are acked sooner and never hit the disk
_INGEST_SLICE = 1000  # events encoded per loop iteration, so acks are never starved by a burst
_new = tuple.__new__  # Record(*fields) without the Python-level __new__ of a NamedTuple
_YIELD_EVERY = 128  # publishes between two yields to the loop (the socket is written when the loop runs)


@dataclass(frozen=True)
class FlushResult:
    """The outcome of ``flush``: ``ok`` when everything emitted before it is acked; else what is pending."""

    ok: bool
    pending: int

    def __bool__(self) -> bool:
        return self.ok


class Publisher(ConnectionLifecycle):
    """One process's publisher (see the module docstring); ``emit`` may be called from any thread."""

    def __init__(self, settings: Settings, spool: Spool, encoder: Callable[..., tuple[str, bytes]]) -> None:
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
        self._spilled = spool.count() > 0  # events adopted from a dead process: send those first
        self._acked: list[int] = []
        self._acks: list[str] = []  # reply subjects of plain JetStream acks, settled once per loop iteration
        self._unflushed: list[int] = []  # core: published since the last flush
        self._flushing: set[asyncio.Task[None]] = set()  # core: flushes awaiting their PONG
        self._unsaved: dict[int, Record] = {}  # in memory, not yet on disk (write-behind, _SAVE_DELAY)
        self._save_timer: asyncio.TimerHandle | None = None
        self._secured = 0
        self._flushers: list[tuple[int, asyncio.Future[None]]] = []  # (last sequence to wait for, future)
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()  # (events ingested to wait for, future)
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
            fut.result(timeout)
            return FlushResult(True, self._pending())
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
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(max(1.0, timeout))
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

    def _on_wake(self) -> None:
        self._wake_scheduled = False
        self._ingest()
        self._work.set()

    def _ingest(self) -> None:
        """Encode a slice of the inbox into memory (or, when memory is full, straight into the spool).

        Core mode while connected is fire-and-forget: events stay in memory (none spilled, none written
        behind); what memory cannot hold waits in the inbox. A disconnect saves them (``_save``).
        """
        volatile = self._connected and self.settings.mode == "core"
        room = 0 if self._spilled else self.settings.memory_max_events - len(self._ready) - len(self._inflight)
        limit = min(_INGEST_SLICE, len(self._inbox), max(0, room) if volatile else _INGEST_SLICE)
        if self._waiting:  # stop at the next flush's boundary, to know the last sequence before it
            limit = min(limit, self._waiting[0][0] - self._ingested)
        inbox, encode, max_bytes = self._inbox, self._encode, self._max_bytes
        records: list[Record] = []
        seq = self._last_seq
        for _ in range(limit):
            event = inbox.popleft()
            try:
                subject, payload = encode(event, max_bytes=max_bytes)
            except Exception as e:  # noqa: BLE001 - a bad event is dropped, counted and logged
                self.stats_.dropped["invalid"] += 1
                self.stats_.error("invalid_event", f"{type(e).__name__}: {e}")
                self._say(logging.WARNING, "invalid", "databricks-nats: dropped invalid event %s: %s", event.type, e)
                continue
            seq += 1
            records.append(_new(Record, (seq, event.id, subject, payload)))
        self._last_seq = seq
        self._ingested += limit
        while self._waiting and self._waiting[0][0] <= self._ingested:
            self._flushers.append((seq, self._waiting.popleft()[1]))
        keep, spill = records[: max(0, room)], records[max(0, room) :]
        if keep:
            self._ready.extend(keep)
            self._unsaved.update({rec.seq: rec for rec in keep})
            self._loaded_upto = keep[-1].seq
        if spill:  # memory is full: to disk, after the unsaved ones (the spool's rows stay in order)
            self._spilled = True
            spill = [*self._unsaved.values(), *spill]
            self._unsaved.clear()
            self._write(spill)
            self._secured = self._ingested  # nothing is left unsaved: every event so far is acked, dropped or on disk
        if self._unsaved and self._save_timer is None and not volatile:
            self._save_timer = self._loop.call_later(_SAVE_DELAY, self._save)
        if self._inbox and not (volatile and limit >= room):  # a big burst: let sends and acks run in between
            self._wake()
        self._update_flushers()

    def _wake(self) -> None:
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._loop.call_soon(self._on_wake)

    def _write(self, records: list[Record]) -> None:
        """Append records to the spool (falling back to memory if the disk fails); drop what exceeds its bound."""
        try:
            dropped = self._spool.append(records)
        except Exception as e:  # noqa: BLE001 - disk full or similar: keep going in memory
            self.stats_.error("spool", f"{type(e).__name__}: {e}")
            self._say(
                logging.ERROR,
                "spool",
                "databricks-nats: spool %s failed (%s); holding events in memory",
                self._spool.path,
                e,
            )
            self._spool = MemorySpool(min(self.settings.spool_max_bytes, 64 * 1024 * 1024))
            dropped = self._spool.append(records)
        self.stats_.spooled += len(records)
        if dropped:
            self._forget(dropped, "spool_full")

    def _save(self) -> None:
        """Write-behind: persist the in-memory events still unacknowledged (acked ones never touch the disk)."""
        self._save_timer = None
        if self._unsaved:
            records = list(self._unsaved.values())
            self._unsaved.clear()
            self._write(records)
        self._secured = self._ingested  # every event ingested so far is now acked, dropped or on disk
        if self._inbox:  # core mode held them back while connected: now they go to the spool too
            self._wake()

    def _forget(self, seqs: list[int], reason: str) -> None:
        """Remove dropped events from memory and count them."""
        gone = set(seqs)
        kept = [rec for rec in self._ready if rec.seq not in gone]
        self._ready.clear()
        self._ready.extend(kept)
        for seq in seqs:
            self._inflight.pop(seq, None)
            self._unsaved.pop(seq, None)
        self.stats_.dropped[reason] += len(seqs)
        self._say(logging.WARNING, reason, "databricks-nats: dropped %d event(s): %s", len(seqs), reason)

    def _refill(self) -> None:
        """Read spilled events back from the spool when memory has room."""
        room = self.settings.memory_max_events - len(self._ready) - len(self._inflight)
        if room <= 0:
            return
        batch = self._spool.load(self._loaded_upto, min(room, 1000))
        if batch:
            self._ready.extend(batch)
            self._loaded_upto = batch[-1].seq
        if len(batch) < min(room, 1000):
            self._spilled = False

    async def _send_forever(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            if self._inbox:  # core mode may have left events there until memory had room
                self._ingest()
            if self._spilled and len(self._ready) < 100:
                self._refill()
            room = self._connected and self._ready and len(self._inflight) < self.settings.max_inflight
            if room and not await self._send_some():
                await asyncio.sleep(0.2)  # the connection is failing; its callbacks will say more
                self._work.set()

    async def _send_some(self) -> bool:
        """Publish ready events while there is room in flight; False when publishing fails."""
        nc = self._nc
        assert nc is not None
        ready, inflight, publish = self._ready, self._inflight, nc.publish
        jetstream = self.settings.mode == "jetstream"
        prefix = self._reply_prefix if jetstream else ""
        most, max_bytes = self.settings.max_inflight, self._max_bytes
        sent = 0
        now = time.monotonic()
        rec: Record | None = None
        try:
            while ready and len(inflight) < most and self._connected:
                rec = ready.popleft()
                if len(rec.payload) > max_bytes:  # encoded before the server told us its max_payload
                    rec = rec._replace(payload=shrink(rec.payload, max_bytes))
                inflight[rec.seq] = (rec, now)
                reply = f"{prefix}{rec.seq}" if jetstream else ""
                await publish(rec.subject, rec.payload, reply, {"Nats-Msg-Id": rec.id, "Content-Type": CE_CONTENT_TYPE})
                sent += 1
                if not jetstream:
                    self._unflushed.append(rec.seq)
                rec = None
                if self._spilled and not ready:
                    self._refill()
                if not sent % _YIELD_EVERY:  # let the socket writer and the acks run: a pipeline, not batches
                    self._flush_core()
                    await asyncio.sleep(0)
                    now = time.monotonic()
        except Exception as e:  # noqa: BLE001 - disconnected, buffer full, payload too big
            assert rec is not None
            self._inflight.pop(rec.seq, None)
            if type(e).__name__ == "MaxPayloadError":
                self._drop_acked([rec.seq], "too_large")
                return True
            ready.appendleft(rec)
            self.stats_.error("publish", f"{type(e).__name__}: {e}")
            return False
        finally:
            self.stats_.published += sent
            if sent and self._timer is None and jetstream:
                self._timer = self._loop.call_later(self.settings.ack_timeout, self._check_timeouts)
            self._flush_core()
        return True

    def _flush_core(self) -> None:
        """Core mode: a flush (PING/PONG) for what was published since the last one; several may be pending."""
        if self._unflushed:
            seqs, self._unflushed = self._unflushed, []
            task = self._loop.create_task(self._core_flush(seqs))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _core_flush(self, seqs: list[int]) -> None:
        assert self._nc is not None
        try:
            await self._nc.flush(timeout=max(1, int(self.settings.ack_timeout)))
        except Exception as e:  # noqa: BLE001 - not flushed: send again (in order) after reconnect
            self.stats_.error("flush", f"{type(e).__name__}: {e}")
            self._requeue(list(self._inflight))
            return
        self._settle(seqs)

    def _requeue(self, seqs: list[int]) -> None:
        """Put in-flight events back at the front of the ready queue, oldest first."""
        for seq in sorted(seqs, reverse=True):
            entry = self._inflight.pop(seq, None)
            if entry is not None:
                self._ready.appendleft(entry[0])
        self._work.set()

    def _check_timeouts(self) -> None:
        self._timer = None
        deadline = time.monotonic() - self.settings.ack_timeout
        late = [seq for seq, (_, sent) in self._inflight.items() if sent <= deadline]
        if late:
            self.stats_.retried += len(late)
            self.stats_.error(
                "ack_timeout", f"{len(late)} publish(es) not acknowledged in {self.settings.ack_timeout:g}s"
            )
            self._requeue(late)
        if self._inflight:
            oldest = next(iter(self._inflight.values()))[1]
            delay = max(0.05, oldest + self.settings.ack_timeout - time.monotonic())
            self._timer = self._loop.call_later(delay, self._check_timeouts)

    async def _on_ack(self, msg: Msg) -> None:
        body = msg.data
        if not msg.headers and b'"error"' not in body and b'"duplicate"' not in body:  # the common ack
            if not self._acks:
                self._loop.call_soon(self._settle_acks)
            self._acks.append(msg.subject)
            return
        seq = int(msg.subject.rsplit(".", 1)[1])
        entry = self._inflight.pop(seq, None)
        if entry is None:
            return  # a late ack for an event already re-sent or acked
        rec, sent = entry
        if msg.headers and msg.headers.get("Status") == "503":
            self._inflight[seq] = entry
            await self._no_stream()
            return
        try:
            resp = json.loads(body)
        except ValueError:
            resp = {"error": {"description": "unreadable ack"}}
        err = resp.get("error")
        if err:
            self.stats_.error("jetstream", str(err.get("description", err))[:200])
            self._say(logging.WARNING, "js_error", "databricks-nats: JetStream refused an event: %s", err)
            self._inflight[seq] = (rec, sent)  # retried by the ack timer
            return
        if resp.get("duplicate"):
            self.stats_.duplicates += 1
        self.stats_.ack_latency(time.monotonic() - sent)
        self._ack([seq])

    def _settle_acks(self) -> None:
        """Handle the plain acks received since the last loop iteration in one go."""
        subjects, self._acks = self._acks, []
        cut = len(self._reply_prefix)  # reply subjects are <prefix><seq>
        self._settle([int(subject[cut:]) for subject in subjects])

    def _settle(self, seqs: list[int]) -> None:
        """These in-flight events are acknowledged (core: flushed); a sequence no longer in flight is ignored."""
        pop = self._inflight.pop
        sent = [(seq, entry[1]) for seq in seqs if (entry := pop(seq, None)) is not None]
        now = time.monotonic()
        self.stats_.ack_latencies([now - t for _, t in sent])
        self._ack([seq for seq, _ in sent])

    def _ack(self, seqs: list[int]) -> None:
        self.stats_.acked += len(seqs)
        self._discard(seqs)
        self._work.set()

    def _drop_acked(self, seqs: list[int], reason: str) -> None:
        self._forget(seqs, reason)
        self._discard(seqs)

    def _discard(self, seqs: list[int]) -> None:
        """Events that are done: forget the unsaved ones, batch-delete the saved ones from the spool."""
        unsaved = self._unsaved
        on_disk = [seq for seq in seqs if unsaved.pop(seq, None) is None]
        if on_disk:
            if not self._acked:
                self._loop.call_soon(self._commit_acks)
            self._acked.extend(on_disk)
        elif self._flushers:
            self._update_flushers()

    def _commit_acks(self) -> None:
        seqs, self._acked = self._acked, []
        try:
            self._spool.delete(seqs)
        except Exception as e:  # noqa: BLE001 - re-sent later; JetStream drops the duplicates
            self.stats_.error("spool", f"{type(e).__name__}: {e}")
        self._update_flushers()

    # ---- flush ----------------------------------------------------------------------------------

    async def _flush(self) -> None:
        """Wait until every event handed over before the call is acknowledged (or flushed, in core mode).

        The wait is on the last sequence given to those events: known once the inbox is ingested up to
        the call (``_waiting`` until then).
        """
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiting.append((self._ingested + len(self._inbox), fut))
        self._ingest()
        self._work.set()
        await fut

    def _update_flushers(self) -> None:
        if not self._flushers:
            return
        lowest = self._spool.min_seq()
        if self._unsaved:
            first = next(iter(self._unsaved))  # inserted in ascending order
            lowest = first if lowest is None else min(lowest, first)
        still = []
        for boundary, fut in self._flushers:
            if fut.done():
                continue
            if lowest is None or lowest > boundary:
                fut.set_result(None)
            else:
                still.append((boundary, fut))
        self._flushers = still

    async def _shutdown(self) -> None:
        self._closing = True
        for task in (self._connector, self._sender, *self._flushing):
            task.cancel()
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
        self._spool.close()
        self._loop.call_soon(self._loop.stop)

    def _spool_forget_after_fork(self) -> None:
        forget = getattr(self._spool, "forget_after_fork", None)
        if forget is not None:
            forget()
