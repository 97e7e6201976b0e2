"""The publisher's ingest and spool half: encode the inbox into memory, write-behind to the spool, read it back.

``Publisher`` inherits this; it owns the state (settings, stats, inbox, memory queues, spool) and provides
``_wake``; ``_update_flushers`` comes from ``delivery.py``. Everything runs on the worker's event loop,
except ``_persist`` (``spool_sync="immediate"``), which runs in the caller of ``emit``.

Durability modes (``spool_sync``):

* ``write-behind`` (default): an event lives only in memory for up to ``_SAVE_DELAY`` (50 ms); most are
  acknowledged sooner and never touch the disk. A SIGKILL loses at most that window.
* ``immediate``: ``emit`` encodes the event and commits it to the spool (one row, SQLite WAL with
  ``synchronous=NORMAL``: a ``write``, no ``fsync``) before it returns, so a killed process (SIGKILL,
  ``os._exit``) loses nothing; an operating-system crash may still lose the last commits. It costs the
  caller an encode and an insert per event (see docs/benchmarks.md). A forked child (multiprocessing
  pools, joblib, Spark's Python workers, which end with ``os._exit``) always uses it.

Maintenance (``_maintain``, a timer on the loop): every ``_ADOPT_EVERY`` seconds the spools of dead peers in
the same directory are adopted (a live process, not only a new one, replays them); every ``_RETRY_EVERY``
seconds while the disk refuses rows they are written again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from databricks_nats.model.events import Event
from databricks_nats.settings import Settings
from databricks_nats.transport.spool import Record, Spool, forked
from databricks_nats.transport.stats import RateLimitedLog, Stats

__all__ = ["Storage"]

log = logging.getLogger("databricks_nats")

_SAVE_DELAY = 0.05  # seconds an event may live only in memory; most are acked sooner and never hit the disk
_INGEST_SLICE = 1000  # events encoded per loop iteration, so acks are never starved by a burst
_ADOPT_EVERY = 30.0  # seconds between two looks for dead peers' spools (glob + a non-blocking flock each)
_RETRY_EVERY = 1.0  # seconds between two attempts to write rows the disk refused
# Drops of events that were accepted (they have a sequence number): a flush covering one is not ok.
_LOSSES = frozenset(
    {"spool_full", "spool_unwritable", "spool_corrupt", "spool_error", "permission_denied", "poison_lost"}
)
_CHECKPOINT_EVERY = 2000  # immediate mode: events between two WAL checkpoints, run by the worker
_new = tuple.__new__  # Record(*fields) without the Python-level __new__ of a NamedTuple


class Storage:
    """Moves events from the inbox into memory and the spool, and spilled ones back into memory."""

    settings: Settings
    stats_: Stats
    _say: RateLimitedLog
    _spool: Spool
    _encode: Callable[..., tuple[str, bytes]]
    _max_bytes: int
    _connected: bool
    _inbox: deque[Event]
    _ingested: int
    _last_seq: int
    _ready: deque[Record]
    _inflight: OrderedDict[int, tuple[Record, float]]
    _loaded_upto: int
    _spilled: bool
    _unsaved: dict[int, Record]
    _save_timer: asyncio.TimerHandle | None
    _secured: int
    _flushers: list[tuple[int, asyncio.Future[None]]]
    _waiting: deque[tuple[int, asyncio.Future[None]]]
    _loop: asyncio.AbstractEventLoop
    _closing: bool
    _work: asyncio.Event
    _maint_timer: asyncio.TimerHandle | None = None  # class defaults: the publisher's __init__ does not set them
    _maint_started = False
    _loss_marks: list[int] | None = None  # highest sequence of each drop not yet reported by a flush
    _checkpoint_due = 0
    _adopted_at = 0.0

    @cached_property
    def _immediate(self) -> bool:
        """``spool_sync="immediate"``, or a forked child (pool workers end with ``os._exit``)."""
        immediate = getattr(self.settings, "spool_sync", "write-behind") == "immediate" or forked()
        if immediate and hasattr(self._spool, "writes_from_callers"):
            self._spool.writes_from_callers()  # no checkpoint (fsync) in emit(): the worker does them
        return immediate

    def _persist(self, event: Event) -> None:
        """Immediate mode, in the caller's thread: encode, commit to the spool, then queue the stored record.

        The spool's lock orders sequences, rows and the inbox alike; nothing raises (fail-open).
        """
        if self._closing:
            self.stats_.dropped["closed"] += 1
            return
        try:
            subject, payload = self._encode(event, max_bytes=self._max_bytes)
        except Exception as e:  # noqa: BLE001 - a bad event is dropped, counted and logged
            self.stats_.dropped["invalid"] += 1
            self.stats_.error("invalid_event", f"{type(e).__name__}: {e}")
            self._say(logging.WARNING, "invalid", "databricks-nats: dropped invalid event %s: %s", event.type, e)
            return
        spool = self._spool
        with spool.lock:  # type: ignore[attr-defined]
            rec = _new(Record, (spool.max_seq() + 1, event.id, subject, payload))
            try:
                dropped = spool.append([rec])
            except Exception as e:  # noqa: BLE001 - never raise into emit(); the spool itself does not
                self.stats_.error("spool", f"{type(e).__name__}: {e}")
                dropped = [rec.seq]
            if dropped:
                spool.note_drops("spool_full", dropped)  # type: ignore[attr-defined]
                if dropped[-1] == rec.seq:
                    return
            self._inbox.append(rec)  # type: ignore[arg-type]

    if TYPE_CHECKING:  # provided by the publisher and delivery.py; a runtime stub would shadow them in the MRO

        def _wake(self) -> None: ...
        def _update_flushers(self) -> None: ...

    def _ingest(self) -> None:
        """Encode a slice of the inbox into memory (or, when memory is full, straight into the spool).

        Core mode while connected is fire-and-forget: events stay in memory (none spilled, none written
        behind); what memory cannot hold waits in the inbox. A disconnect saves them (``_save``).
        """
        if not self._maint_started:
            self._start_maintenance()
        if getattr(self._spool, "_drops", None) or getattr(self._spool, "_errors", None):
            self._drain_spool()
        volatile = self._connected and self.settings.mode == "core"
        room = 0 if self._spilled else self.settings.memory_max_events - len(self._ready) - len(self._inflight)
        limit = min(_INGEST_SLICE, len(self._inbox), max(0, room) if volatile else _INGEST_SLICE)
        if self._waiting:  # stop at the next flush's boundary, to know the last sequence before it
            limit = min(limit, self._waiting[0][0] - self._ingested)
        inbox, encode, max_bytes = self._inbox, self._encode, self._max_bytes
        records: list[Record] = []
        seq = self._last_seq
        immediate, loaded = self._immediate, self._loaded_upto
        for _ in range(limit):
            event = inbox.popleft()
            if immediate:  # encoded and on disk already (_persist); skip what _refill read back meanwhile
                rec: Any = event
                seq = max(seq, rec.seq)
                if rec.seq > loaded:
                    records.append(rec)
                continue
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
            if not immediate:
                self._unsaved.update({rec.seq: rec for rec in keep})
            self._loaded_upto = keep[-1].seq
        if spill and immediate:  # on disk already: read back when memory has room
            self._spilled = True
        elif spill:  # memory is full: to disk, after the unsaved ones (the spool's rows stay in order)
            self._spilled = True
            spill = [*self._unsaved.values(), *spill]
            self._unsaved.clear()
            self._write(spill)
            self._secured = self._ingested  # nothing is left unsaved: every event so far is acked, dropped or on disk
        if immediate:
            self._secured = self._ingested
            self._checkpoint_due += limit
            if self._checkpoint_due >= _CHECKPOINT_EVERY and hasattr(self._spool, "checkpoint"):
                self._checkpoint_due = 0
                self._spool.checkpoint()
        if self._unsaved and self._save_timer is None and not volatile:
            self._save_timer = self._loop.call_later(_SAVE_DELAY, self._save)
        if self._inbox and not (volatile and limit >= room):  # a big burst: let sends and acks run in between
            self._wake()
        self._update_flushers()

    def _write(self, records: list[Record]) -> None:
        """Append records to the spool (falling back to memory if the disk fails); drop what exceeds its bound."""
        try:  # a durable spool never raises: rows the disk refuses stay in it, in memory (bounded), retried
            dropped = self._spool.append(records)
        except Exception as e:  # noqa: BLE001 - a spool that does: these events are lost, and counted
            self.stats_.error("spool", f"{type(e).__name__}: {e}")
            dropped = []
            self._forget([rec.seq for rec in records], "spool_error")
        self.stats_.spooled += len(records)
        if dropped:
            self._forget(dropped, "spool_full")
        self._drain_spool()

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
        if seqs and reason in _LOSSES:
            if self._loss_marks is None:
                self._loss_marks = []
            self._loss_marks.append(max(seqs))

    def _lost_upto(self, boundary: int) -> bool:
        """For a flush up to ``boundary``: was an event at or below it dropped (since an earlier flush said so)?"""
        marks = self._loss_marks
        if not marks:
            return False
        self._loss_marks = [m for m in marks if m > boundary]
        return len(self._loss_marks) < len(marks)

    def _refill(self) -> None:
        """Read spilled events back from the spool when memory has room."""
        room = self.settings.memory_max_events - len(self._ready) - len(self._inflight)
        if room <= 0:
            return
        batch = self._spool.load(self._loaded_upto, min(room, 1000))
        self._drain_spool()
        if batch:
            self._ready.extend(batch)
            self._loaded_upto = batch[-1].seq
        if len(batch) < min(room, 1000):
            self._spilled = False

    # ---- spool reports and maintenance ------------------------------------------------------------------

    def _drain_spool(self) -> None:
        """Count what the spool dropped on its own (corrupt rows, refused rows beyond memory) and its errors."""
        spool = self._spool
        take = getattr(spool, "take_drops", None)
        if take is None:
            return
        for reason, seqs, n in take():
            if seqs:
                self._forget(seqs, reason)
            else:  # events of a dead process's damaged file: never ours to send
                self.stats_.dropped[reason] += n
                self._say(logging.WARNING, reason, "databricks-nats: dropped %d event(s): %s", n, reason)
        errors: list[str] = getattr(spool, "take_errors", list)()
        for text in errors:
            self.stats_.error("spool", text)
        if errors:
            self._say(logging.WARNING, "spool", "databricks-nats: spool: %s (events are kept in memory)", errors[-1])
        self._update_flushers()

    def _start_maintenance(self) -> None:
        self._maint_started = True
        self._adopted_at = time.monotonic()  # the spool adopted at open
        self._maint_timer = self._loop.call_later(min(_ADOPT_EVERY, _RETRY_EVERY * 5), self._maintain)

    def _maintain(self) -> None:
        """Periodic: write rows the disk refused, adopt dead peers' spools, report; reschedules itself."""
        self._maint_timer = None
        if self._closing:
            return
        spool = self._spool
        try:
            retry = getattr(spool, "retry", None)
            if retry is not None:
                retry()
            if self._immediate and hasattr(spool, "checkpoint"):
                spool.checkpoint()
            if time.monotonic() - self._adopted_at >= _ADOPT_EVERY:
                self._adopted_at = time.monotonic()
                self._adopt_peers()
            self._drain_spool()
        except Exception as e:  # noqa: BLE001 - the spool contains its errors; this is a last resort
            self.stats_.error("spool", f"{type(e).__name__}: {e}")
        degraded = getattr(spool, "_mem_rows", 0) or getattr(spool, "_stale", None) or getattr(spool, "_held", None)
        until_adopt = max(0.05, self._adopted_at + _ADOPT_EVERY - time.monotonic())
        self._maint_timer = self._loop.call_later(
            min(until_adopt, _RETRY_EVERY) if degraded else until_adopt, self._maintain
        )

    def _adopt_peers(self) -> None:
        """Adopt the spools of dead processes in our directory while we run (their lock is free)."""
        spool = self._spool
        adopt = getattr(spool, "adopt_orphans", None)
        if adopt is None or not spool.orphans():  # type: ignore[attr-defined]
            return
        if self._unsaved:  # write-behind: ours go first, so adopted rows come after every sequence given out
            if self._save_timer is not None:
                self._save_timer.cancel()
            self._save()
        n = adopt(self._last_seq + 1)
        if n:
            if not self._immediate:
                self._last_seq = max(self._last_seq, spool.max_seq())
            self._spilled = True
            self.stats_.replayed += n
            log.info("databricks-nats: re-publishing %d event(s) left by a process that died", n)
            self._work.set()
