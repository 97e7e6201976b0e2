"""The rows of one spool file: written, indexed in memory, deleted, read back; held in memory when the disk refuses.

``RowStore`` is the base of ``SqliteSpool`` (``sqlite.py``), which claims the file (``_file``), opens and closes
it; ``Adoption`` (``adoption.py``) sits between them. See the package docstring, *Full or failing disk*.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import sqlite3
import threading
from array import array
from collections import Counter

from databricks_nats.transport.spool.base import Record
from databricks_nats.transport.spool.files import Orphan
from databricks_nats.transport.spool.rows import pack, unpack

__all__ = ["MEMORY_MAX", "RowStore"]

log = logging.getLogger("databricks_nats")

MEMORY_MAX = 64 * 1024 * 1024  # bytes of rows kept in memory when the disk refuses them


_SCHEMA = "CREATE TABLE IF NOT EXISTS bursts (seq INTEGER PRIMARY KEY, n INTEGER, body BLOB)"


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


class _Row:
    """The in-memory index of one stored row: its sequences (ascending) and which are deleted; 9 bytes an event.

    ``mem`` holds the records while the row is not on disk (the disk refused it); None once written.
    """

    __slots__ = ("dead", "first_live", "live", "mem", "seqs", "size")

    def __init__(self, seqs: list[int], size: int, mem: list[Record] | None = None) -> None:
        self.seqs = array("q", seqs)
        self.dead = bytearray(len(seqs))  # 1 once the event at that index is deleted
        self.live = len(seqs)
        self.size = size
        self.first_live = 0  # index into seqs: no live sequence before it
        self.mem = mem

    def kill(self, seq: int) -> bool:
        """Mark ``seq`` deleted; False when the row does not hold it (or it already was)."""
        i = bisect.bisect_left(self.seqs, seq)
        if i == len(self.seqs) or self.seqs[i] != seq or self.dead[i]:
            return False
        self.dead[i] = 1
        self.live -= 1
        return True

    def live_seqs(self) -> list[int]:
        return [seq for seq, dead in zip(self.seqs, self.dead, strict=True) if not dead]


class RowStore:
    """The rows of one SQLite file, safe from any thread (``lock``); none of its methods raises.

    Each ``append`` is one row (``pack``); which events of which row are still live is kept in memory
    (``_Row``: packed arrays, no object per event), so ``delete`` is bookkeeping until a row has none left.
    Rows are written in ascending sequence order; ``_firsts`` finds a sequence's row by bisection.
    """

    _file: str  # our database file: set by ``SqliteSpool`` once it holds the stem

    def __init__(self, max_bytes: int, memory_max_bytes: int | None = None) -> None:
        self.lock = threading.RLock()
        self._max = max_bytes
        self._mem_max = min(max_bytes, MEMORY_MAX) if memory_max_bytes is None else memory_max_bytes
        self._rows: dict[int, _Row] = {}  # first sequence -> row index, ascending (insertion order)
        self._firsts: list[int] = []  # the rows' first sequences, ascending; may list removed rows (compacted)
        self._count = 0
        self._bytes = 0
        self._mem_bytes = 0  # payload bytes of rows held only in memory
        self._mem_rows = 0
        self._stale: list[int] = []  # rows removed from the index whose delete the database refused
        self._next = 1
        self._held: list[Orphan] = []  # adopted stems kept until their events are safely ours
        self._drops: list[tuple[str, list[int], int]] = []  # (reason, our sequences, events) not yet reported
        self._errors: list[str] = []
        self.dropped: Counter[str] = Counter()  # every drop, by reason (cumulative)
        self._db: sqlite3.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._caller_writes = False
        self._closed = False

    # ---- the database -----------------------------------------------------------------------------

    def _open_db(self) -> bool:
        """Open (or retry opening) our database; False while the disk refuses it (rows stay in memory)."""
        if self._db is not None:
            return True
        try:
            self._db = _connect(self._file)
            if self._caller_writes:
                self._db.execute("PRAGMA wal_autocheckpoint=0")
            return True
        except (sqlite3.Error, OSError) as e:
            self._error(f"cannot open {self._file}: {type(e).__name__}: {e}")
            return False

    def _error(self, text: str) -> None:
        if len(self._errors) < 100:
            self._errors.append(text)

    def _drop(self, reason: str, seqs: list[int], n: int | None = None) -> None:
        n = len(seqs) if n is None else n
        if n:
            self.dropped[reason] += n
            self._drops.append((reason, seqs, n))

    def take_drops(self) -> list[tuple[str, list[int], int]]:
        """What the spool dropped since the last call: (reason, our sequences or [], number of events)."""
        with self.lock:
            out, self._drops = self._drops, []
            return out

    def take_errors(self) -> list[str]:
        """Disk errors since the last call (each already contained)."""
        with self.lock:
            out, self._errors = self._errors, []
            return out

    def writes_from_callers(self) -> None:
        """Immediate mode: commits happen in the threads calling ``emit``. They must never run a checkpoint
        (its ``fsync`` would stall the caller): automatic checkpoints are off, ``checkpoint`` does them."""
        with self.lock:
            self._caller_writes = True
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        """Copy the WAL into the database from a connection of its own, without the lock (callers keep writing)."""
        if not self._caller_writes or self._closed or self._db is None:
            return
        try:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(self._file, check_same_thread=False, isolation_level=None)
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except (sqlite3.Error, OSError) as e:
            self._error(f"checkpoint of {self._file}: {type(e).__name__}: {e}")

    def note_drops(self, reason: str, seqs: list[int]) -> None:
        """Record drops decided by a caller that cannot report them itself (``take_drops`` returns them)."""
        with self.lock:
            self._drop(reason, seqs)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def unpersisted(self) -> int:
        """Events held only in memory because the disk refused their rows."""
        return sum(row.live for row in self._rows.values() if row.mem is not None) if self._mem_rows else 0

    def unpersisted_seqs(self) -> list[int]:
        with self.lock:
            return [s for row in self._rows.values() if row.mem is not None for s in row.live_seqs()]

    # ---- rows -----------------------------------------------------------------------------------------

    def append(self, records: list[Record]) -> list[int]:
        with self.lock:
            size = sum(len(r.payload) for r in records)
            dropped: list[int] = []
            while self._bytes + size > self._max and self._rows:  # make room: the oldest rows go first
                dropped += self._drop_first()
            while size > self._max and records:  # this burst alone is too big: keep its newest events
                size -= len(records[0].payload)
                dropped.append(records[0].seq)
                records = records[1:]
            if records:
                self._insert(records)
            return dropped

    def _insert(self, records: list[Record]) -> None:
        """Add one row: to disk if it takes it, else kept in memory (bounded) until it does."""
        seqs = [r.seq for r in records]
        size = sum(len(r.payload) for r in records)
        if self._mem_rows:
            self._persist_memory()
        mem: list[Record] | None = records
        if not self._mem_rows and self._write_row(seqs[0], records):
            mem = None
        self._rows[seqs[0]] = _Row(seqs, size, mem)
        self._firsts.append(seqs[0])
        self._count += len(seqs)
        self._bytes += size
        self._next = seqs[-1] + 1
        if mem is not None:
            self._mem_rows += 1
            self._mem_bytes += size
            while self._mem_bytes > self._mem_max:
                self._drop_first_in_memory()

    def _write_row(self, first: int, records: list[Record]) -> bool:
        if self._closed or not self._open_db():
            return False
        assert self._db is not None
        try:
            self._db.execute("INSERT INTO bursts (seq, n, body) VALUES (?, ?, ?)", (first, len(records), pack(records)))
            return True
        except (sqlite3.Error, OSError) as e:  # disk full, I/O error: the row stays in memory
            self._error(f"writing {self._file}: {type(e).__name__}: {e}")
            return False

    def _persist_memory(self) -> None:
        """Write the rows held in memory, oldest first, until the disk refuses one."""
        for first, row in self._rows.items():
            if row.mem is None:
                continue
            if not self._write_row(first, row.mem):  # all of it: the index says which are live
                return
            row.mem = None
            self._mem_rows -= 1
            self._mem_bytes -= row.size
            if not self._mem_rows:
                break

    def _drop_first_in_memory(self) -> None:
        for first, row in self._rows.items():
            if row.mem is not None:
                live = row.live_seqs()
                self._count -= len(live)
                self._remove([first])
                self._drop("spool_unwritable", live)
                return

    def retry(self) -> None:
        """Write what the disk refused earlier, delete what it refused to delete; release adopted files."""
        with self.lock:
            if self._closed:
                return
            if self._mem_rows:
                self._persist_memory()
            if self._stale:
                self._delete_rows([])
            self._release_held()

    def _release_held(self) -> None:
        """Remove the adopted stems once none of our rows is only in memory (their copies are safe)."""
        if self._held and (not self._mem_rows or self._closed):
            held, self._held = self._held, []
            for orphan in held:
                orphan.release(remove=not self._mem_rows)

    def _drop_first(self) -> list[int]:
        first, row = next(iter(self._rows.items()))
        live = row.live_seqs()
        self._count -= len(live)
        self._remove([first])
        return live

    def _remove(self, firsts: list[int]) -> None:
        """Take rows out of the index (memory first), then out of the database (later if it refuses)."""
        on_disk = []
        for first in firsts:
            row = self._rows.pop(first)
            self._bytes -= row.size
            if row.mem is not None:
                self._mem_rows -= 1
                self._mem_bytes -= row.size
            else:
                on_disk.append(first)
        if len(self._firsts) > 2 * len(self._rows) + 64:  # amortised: drop the removed rows from the index
            self._firsts = list(self._rows)
        self._delete_rows(on_disk)
        if self._held and not self._mem_rows:
            self._release_held()

    def _delete_rows(self, firsts: list[int]) -> None:
        todo = self._stale + firsts if self._stale else firsts
        if not todo:
            return
        self._stale = []
        if self._db is None or self._closed:
            self._stale = todo
            return
        for i in range(0, len(todo), 500):
            chunk = todo[i : i + 500]
            try:
                self._db.execute(f"DELETE FROM bursts WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
            except (sqlite3.Error, OSError) as e:  # disk full: retried later; replayed (deduplicated) if we die
                self._error(f"deleting from {self._file}: {type(e).__name__}: {e}")
                self._stale = todo[i:]
                return

    def _row_of(self, seq: int) -> _Row | None:
        i = bisect.bisect_right(self._firsts, seq) - 1
        return self._rows.get(self._firsts[i]) if i >= 0 else None

    def delete(self, seqs: list[int]) -> None:
        with self.lock:
            done = []
            row: _Row | None = None
            for seq in seqs:
                if row is None or not row.seqs[0] <= seq <= row.seqs[-1]:
                    row = self._row_of(seq)
                if row is not None and row.kill(seq):
                    self._count -= 1
                    if not row.live:
                        done.append(row.seqs[0])
            if done:
                self._remove(done)

    def load(self, after: int, limit: int) -> list[Record]:
        with self.lock:
            out: list[Record] = []
            corrupt: list[int] = []
            i = max(0, bisect.bisect_right(self._firsts, after) - 1)
            for first in self._firsts[i:]:
                row = self._rows.get(first)
                if row is None or row.seqs[-1] <= after:
                    continue
                records = row.mem if row.mem is not None else self._read_row(first, row)
                if records is None:
                    corrupt.append(first)
                    continue
                dead = row.dead
                out += [r for k, r in enumerate(records) if r.seq > after and not dead[k]]
                if len(out) >= limit:
                    break
            for first in corrupt:  # unreadable rows of our own file: dropped and counted
                live = self._rows[first].live_seqs()
                self._count -= len(live)
                self._remove([first])
                self._drop("spool_corrupt", live)
            return out[:limit]

    def _read_row(self, first: int, row: _Row) -> list[Record] | None:
        try:
            assert self._db is not None
            found = self._db.execute("SELECT body FROM bursts WHERE seq = ?", (first,)).fetchone()
            records = unpack(found[0])
            if [r.seq for r in records] != list(row.seqs):
                raise ValueError("row holds other sequences")
            return records
        except Exception as e:  # noqa: BLE001 - a damaged row (bit flip, truncated file): contained
            self._error(f"reading row {first} of {self._file}: {type(e).__name__}: {e}")
            log.warning(
                "databricks-nats: spool %s: row %d is unreadable (%s); its events are dropped", self._file, first, e
            )
            return None

    def min_seq(self) -> int | None:
        for row in self._rows.values():  # the first row always holds a live sequence
            n = len(row.dead)
            while row.first_live < n and row.dead[row.first_live]:
                row.first_live += 1
            if row.first_live < n:
                return row.seqs[row.first_live]
        return None

    def max_seq(self) -> int:
        """The highest sequence ever stored by this process (new records must go above it)."""
        return self._next - 1

    def count(self) -> int:
        return self._count

    def _trim_partly_acknowledged(self) -> None:
        """At close: rewrite rows holding acknowledged events with their live ones only, so a clean exit
        replays nothing twice (a killed process's partly acknowledged rows come back whole)."""
        if self._db is None:
            return
        for first, row in self._rows.items():
            if row.mem is not None or row.live == len(row.seqs):
                continue
            records = self._read_row(first, row)
            if records is None:
                continue
            live = [r for r, dead in zip(records, row.dead, strict=True) if not dead]
            try:
                self._db.execute("UPDATE bursts SET n = ?, body = ? WHERE seq = ?", (len(live), pack(live), first))
            except (sqlite3.Error, OSError):
                return  # the disk is full: replayed whole, JetStream drops the repeats
