"""The publisher's buffer part: encoded events in memory (the ready queue), write-behind to the spool, read back.

Owns the ready queue the sender takes from, the events in memory not yet on disk (``unsaved``), the read
cursor of the backlog on disk (``loaded_upto``, ``spilled``), the live lane, the drops a flush must report
(``lost_upto``) and the spool's maintenance. Neighbours: the ingest part (``encode``), the sender (how many
are in flight, ``forget``, ``update_flushers``) and the publisher (``wake``: ingest more; ``work``: send).
Everything runs on the worker's event loop.

Durability modes (``spool_sync``):

* ``write-behind`` (default): an event lives only in memory for up to ``_SAVE_DELAY`` (50 ms); most are
  acknowledged sooner and never touch the disk. A SIGKILL loses at most that window.
* ``immediate``: ``emit`` encodes the event and commits it to the spool (one row, SQLite WAL with
  ``synchronous=NORMAL``: a ``write``, no ``fsync``) before it returns (``ingest.py``), so a killed process
  (SIGKILL, ``os._exit``) loses nothing; an operating-system crash may still lose the last commits. It
  costs the caller an encode and an insert per event (see docs/benchmarks.md). A forked child
  (multiprocessing pools, joblib, Spark's Python workers, which end with ``os._exit``) always uses it.

The live lane: while a backlog waits on disk, new events go into memory (when it has room) and are sent
as soon as the backlog batch already read back is out, instead of behind the whole backlog; the backlog's
cursor skips them when it reaches them. Immediate mode keeps emit order.

Maintenance (``maintain``, a timer on the loop): every ``_ADOPT_EVERY`` seconds the spools of dead peers in
the same directory are adopted (a live process, not only a new one, replays them); every ``_RETRY_EVERY``
seconds while the disk refuses rows they are written again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from databricks_nats.settings import Settings
from databricks_nats.transport.ingest import Ingest
from databricks_nats.transport.spool import Record, Spool
from databricks_nats.transport.stats import RateLimitedLog, Stats

__all__ = ["Buffer"]

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


class InFlight(Protocol):
    """What the buffer asks of the sender."""

    def __len__(self) -> int: ...
    def forget(self, seqs: list[int]) -> None: ...
    def update_flushers(self) -> None: ...


class Buffer:
    """Moves events from the ingest part into memory and the spool, and spilled ones back into memory."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        ingest: Ingest,
        stats: Stats,
        say: RateLimitedLog,
        loop: asyncio.AbstractEventLoop,
        *,
        wake: Callable[[], None],
        work: Callable[[], None],
    ) -> None:
        self.memory_max = settings.memory_max_events
        self.spool = spool
        self.ingest = ingest
        self.immediate = ingest.immediate
        self.sender: InFlight = _NoSender()  # wired by the publisher
        self.ready: deque[Record] = deque()  # the sender pops from the left
        self.unsaved: dict[int, Record] = {}  # in memory, not yet on disk (write-behind, _SAVE_DELAY)
        self.loaded_upto = 0
        self.spilled = spool.count() > 0  # events adopted from a dead process: a backlog on disk
        self.live: set[int] = set()  # live-lane sequences taken into memory while a backlog is on disk
        self.secured = 0  # events ingested so far that are acked, dropped or on disk
        self.closing = False
        self._stats, self._say, self._loop = stats, say, loop
        self._wake, self._work = wake, work
        self._save_timer: asyncio.TimerHandle | None = None
        self._done: list[int] = []  # acknowledged events on disk, deleted once per loop iteration
        self._loss_marks: list[int] = []  # highest sequence of each drop not yet reported by a flush
        self._checkpoint_due = 0
        self._maint_timer: asyncio.TimerHandle | None = None
        self._maint_started = False
        self._adopted_at = 0.0

    def pending(self) -> int:
        return self.spool.count() + len(self.unsaved)

    # ---- in: from the ingest part ------------------------------------------------------------------

    def fill(self, volatile: bool) -> None:
        """Encode a slice of the inbox into memory (or, when memory is full, straight into the spool).

        ``volatile`` (core mode while connected: fire-and-forget): events stay in memory (none spilled,
        none written behind); what memory cannot hold waits in the inbox. A disconnect saves them.
        While a backlog waits on disk, new events take the live lane (the module docstring).
        """
        if not self.spilled or self.immediate:
            self._fill(volatile)
            return
        cursor, first = self.loaded_upto, self.ingest.last_seq + 1
        self.spilled = False  # room for the live lane is what memory has left (the backlog batch included)
        try:
            self._fill(volatile)
        finally:
            kept_upto = self.loaded_upto if self.loaded_upto >= first else first - 1
            self.spilled = True
            self.loaded_upto = cursor
        if kept_upto >= first:  # memory-full spills (after these) stay on disk, read back in order
            self.live.update(range(first, kept_upto + 1))

    def _fill(self, volatile: bool) -> None:
        if not self._maint_started:
            self._start_maintenance()
        spool = self.spool
        if getattr(spool, "_drops", None) or getattr(spool, "_errors", None):
            self.drain_spool()
        room = 0 if self.spilled else self.memory_max - len(self.ready) - len(self.sender)
        most = min(_INGEST_SLICE, max(0, room)) if volatile else _INGEST_SLICE
        taken, records = self.ingest.encode(most, self.loaded_upto)
        keep, spill = records[: max(0, room)], records[max(0, room) :]
        if keep:
            self.ready.extend(keep)
            if not self.immediate:
                self.unsaved.update({rec.seq: rec for rec in keep})
            self.loaded_upto = keep[-1].seq
        if spill and self.immediate:  # on disk already: read back when memory has room
            self.spilled = True
        elif spill:  # memory is full: to disk, after the unsaved ones (the spool's rows stay in order)
            self.spilled = True
            spill = [*self.unsaved.values(), *spill]
            self.unsaved.clear()
            self._write(spill)
            self.secured = self.ingest.ingested  # nothing is left unsaved: all acked, dropped or on disk
        if self.immediate:
            self.secured = self.ingest.ingested
            self._checkpoint_due += taken
            if self._checkpoint_due >= _CHECKPOINT_EVERY and hasattr(spool, "checkpoint"):
                self._checkpoint_due = 0
                spool.checkpoint()
        if self.unsaved and self._save_timer is None and not volatile:
            self._save_timer = self._loop.call_later(_SAVE_DELAY, self.save)
        if self.ingest.inbox and not (volatile and taken >= room):  # a big burst: sends and acks run in between
            self._wake()
        self.sender.update_flushers()

    def _write(self, records: list[Record]) -> None:
        """Append records to the spool (falling back to memory if the disk fails); drop what exceeds its bound."""
        try:  # a durable spool never raises: rows the disk refuses stay in it, in memory (bounded), retried
            dropped = self.spool.append(records)
        except Exception as e:  # noqa: BLE001 - a spool that does: these events are lost, and counted
            self._stats.error("spool", f"{type(e).__name__}: {e}")
            dropped = []
            self.forget([rec.seq for rec in records], "spool_error")
        self._stats.spooled += len(records)
        if dropped:
            self.forget(dropped, "spool_full")
        self.drain_spool()

    def save(self) -> None:
        """Write-behind: persist the in-memory events still unacknowledged (acked ones never touch the disk)."""
        if self._save_timer is not None:
            self._save_timer.cancel()
            self._save_timer = None
        if self.unsaved:
            records = list(self.unsaved.values())
            self.unsaved.clear()
            self._write(records)
        self.secured = self.ingest.ingested  # every event ingested so far is now acked, dropped or on disk
        if self.ingest.inbox:  # core mode held them back while connected: now they go to the spool too
            self._wake()

    # ---- back: from the spool ----------------------------------------------------------------------

    def top_up(self) -> None:
        """Before sending: read the backlog back when memory runs low."""
        if self.spilled and len(self.ready) < 100:
            self.refill()

    def refill(self) -> None:
        """Read spilled events back from the spool when memory has room, skipping live-lane events."""
        room = self.memory_max - len(self.ready) - len(self.sender)
        if room <= 0:
            return
        batch = self.spool.load(self.loaded_upto, min(room, 1000))
        self.drain_spool()
        live = self.live
        if batch:
            self.ready.extend(batch if not live else [rec for rec in batch if rec.seq not in live])
            self.loaded_upto = batch[-1].seq
        if len(batch) < min(room, 1000):
            self.spilled = False
            if live:  # the backlog is read: every live-lane event is in memory or done
                self.loaded_upto = max(self.loaded_upto, max(live))
                live.clear()

    # ---- out: done or dropped ----------------------------------------------------------------------

    def done(self, seqs: list[int]) -> None:
        """Events that are done: forget the unsaved ones, batch-delete the saved ones from the spool."""
        unsaved = self.unsaved
        on_disk = [seq for seq in seqs if unsaved.pop(seq, None) is None]
        if on_disk:
            if not self._done:
                self._loop.call_soon(self.commit)
            self._done.extend(on_disk)
        else:
            self.sender.update_flushers()

    def commit(self) -> None:
        """Delete the acknowledged events' rows (once per loop iteration)."""
        seqs, self._done = self._done, []
        if seqs:
            try:
                self.spool.delete(seqs)
            except Exception as e:  # noqa: BLE001 - re-sent later; JetStream drops the duplicates
                self._stats.error("spool", f"{type(e).__name__}: {e}")
        self.sender.update_flushers()

    def forget(self, seqs: list[int], reason: str) -> None:
        """Dropped events: out of memory (and flight), counted; a flush covering one is not ok."""
        gone = set(seqs)
        kept = [rec for rec in self.ready if rec.seq not in gone]
        self.ready.clear()
        self.ready.extend(kept)
        self.sender.forget(seqs)
        for seq in seqs:
            self.unsaved.pop(seq, None)
        self._stats.dropped[reason] += len(seqs)
        self._say(logging.WARNING, reason, "databricks-nats: dropped %d event(s): %s", len(seqs), reason)
        if seqs and reason in _LOSSES:
            self._loss_marks.append(max(seqs))

    def lost_upto(self, boundary: int) -> bool:
        """For a flush up to ``boundary``: was an event at or below it dropped (since an earlier flush said so)?"""
        marks = self._loss_marks
        if not marks:
            return False
        self._loss_marks = [m for m in marks if m > boundary]
        return len(self._loss_marks) < len(marks)

    def lowest_pending(self) -> int | None:
        """The lowest sequence not yet acknowledged nor dropped, in memory or on disk (None: none)."""
        lowest = self.spool.min_seq()
        if self.unsaved:
            first = next(iter(self.unsaved))  # inserted in ascending order
            lowest = first if lowest is None else min(lowest, first)
        return lowest

    def close(self) -> None:
        """At shutdown (after the inbox was filled in): stop the timers, delete what was acknowledged, put
        everything else on disk."""
        self.closing = True
        if self._maint_timer is not None:
            self._maint_timer.cancel()
        if self._done:
            self.commit()
        self.save()

    # ---- spool reports and maintenance ------------------------------------------------------------------

    def drain_spool(self) -> None:
        """Count what the spool dropped on its own (corrupt rows, refused rows beyond memory) and its errors."""
        spool = self.spool
        take = getattr(spool, "take_drops", None)
        if take is None:
            return
        for reason, seqs, n in take():
            if seqs:
                self.forget(seqs, reason)
            else:  # events of a dead process's damaged file: never ours to send
                self._stats.dropped[reason] += n
                self._say(logging.WARNING, reason, "databricks-nats: dropped %d event(s): %s", n, reason)
        errors: list[str] = getattr(spool, "take_errors", list)()
        for text in errors:
            self._stats.error("spool", text)
        if errors:
            self._say(logging.WARNING, "spool", "databricks-nats: spool: %s (events are kept in memory)", errors[-1])
        self.sender.update_flushers()

    def _start_maintenance(self) -> None:
        self._maint_started = True
        self._adopted_at = time.monotonic()  # the spool adopted at open
        self._maint_timer = self._loop.call_later(min(_ADOPT_EVERY, _RETRY_EVERY * 5), self.maintain)

    def maintain(self) -> None:
        """Periodic: write rows the disk refused, adopt dead peers' spools, report; reschedules itself."""
        if self.closing:
            return
        spool = self.spool
        try:
            retry = getattr(spool, "retry", None)
            if retry is not None:
                retry()
            if self.immediate and hasattr(spool, "checkpoint"):
                spool.checkpoint()
            if time.monotonic() - self._adopted_at >= _ADOPT_EVERY:
                self._adopted_at = time.monotonic()
                self.adopt_peers()
            self.drain_spool()
        except Exception as e:  # noqa: BLE001 - the spool contains its errors; this is a last resort
            self._stats.error("spool", f"{type(e).__name__}: {e}")
        degraded = getattr(spool, "_mem_rows", 0) or getattr(spool, "_stale", None) or getattr(spool, "_held", None)
        until_adopt = max(0.05, self._adopted_at + _ADOPT_EVERY - time.monotonic())
        self._maint_timer = self._loop.call_later(
            min(until_adopt, _RETRY_EVERY) if degraded else until_adopt, self.maintain
        )

    def adopt_peers(self) -> None:
        """Adopt the spools of dead processes in our directory while we run (their lock is free)."""
        spool = self.spool
        adopt = getattr(spool, "adopt_orphans", None)
        if adopt is None or not spool.orphans():  # type: ignore[attr-defined]
            return
        if self.unsaved:  # write-behind: ours go first, so adopted rows come after every sequence given out
            self.save()
        n = adopt(self.ingest.last_seq + 1)
        if n:
            if not self.immediate:
                self.ingest.advance(spool.max_seq())
            self.spilled = True
            self._stats.replayed += n
            log.info("databricks-nats: re-publishing %d event(s) left by a process that died", n)
            self._work()


class _NoSender:
    """Until the publisher wires the sender: nothing in flight."""

    def __len__(self) -> int:
        return 0

    def forget(self, seqs: list[int]) -> None:
        pass

    def update_flushers(self) -> None:
        pass
