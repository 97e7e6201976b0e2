"""The publisher's ingest and spool half: encode the inbox into memory, write-behind to the spool, read it back.

``Publisher`` inherits this; it owns the state (settings, stats, inbox, memory queues, spool) and provides
``_wake``; ``_update_flushers`` comes from ``delivery.py``. Everything runs on the worker's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from databricks_nats.model.events import Event
from databricks_nats.settings import Settings
from databricks_nats.transport.spool import MemorySpool, Record, Spool
from databricks_nats.transport.stats import RateLimitedLog, Stats

__all__ = ["Storage"]

_SAVE_DELAY = 0.05  # seconds an event may live only in memory; most are acked sooner and never hit the disk
_INGEST_SLICE = 1000  # events encoded per loop iteration, so acks are never starved by a burst
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

    if TYPE_CHECKING:  # provided by the publisher and delivery.py; a runtime stub would shadow them in the MRO

        def _wake(self) -> None: ...
        def _update_flushers(self) -> None: ...

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
