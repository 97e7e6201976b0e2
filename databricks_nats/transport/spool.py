"""The durable spool: every event not yet acknowledged, in emit order, surviving a killed process.

``SqliteSpool`` keeps one SQLite database per process (WAL, ``synchronous=NORMAL``: a committed row
survives the process being killed; only an OS crash may lose the last commits) in the namespace's
spool directory, locked with ``flock`` for the process's lifetime. A burst of events is one row
(zlib-compressed: one insert, a few pages); a row is deleted once all its events are. At start, a
process adopts the spools of dead processes (their lock is free): it copies their events, oldest first,
into its own spool and deletes their files, so whatever they never got acknowledged is published again
with its original id (events of a partly acknowledged row too: JetStream drops those as duplicates).

Bounded: when the stored payload bytes exceed ``max_bytes`` the oldest rows are dropped (and counted),
then the oldest events of a burst that alone exceeds it. ``MemorySpool`` has the same contract without
durability; it is the fallback when the directory is not writable.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import glob
import itertools
import json
import logging
import os
import sqlite3
import uuid
import zlib
from array import array
from collections import OrderedDict
from typing import NamedTuple, Protocol

__all__ = ["MemorySpool", "Record", "Spool", "SqliteSpool", "open_spool"]

log = logging.getLogger("databricks_nats")


class Record(NamedTuple):
    """One spooled event: its spool sequence, event id (the Nats-Msg-Id), subject and encoded envelope."""

    seq: int
    id: str
    subject: str
    payload: bytes


class Spool(Protocol):
    """What the publisher needs from a spool; ``count`` and ``bytes`` are cached and safe from any thread."""

    @property
    def durable(self) -> bool: ...
    @property
    def path(self) -> str | None: ...

    def append(self, records: list[Record]) -> list[int]:
        """Store records (ascending sequences, above any stored); return the sequences dropped to stay in bounds."""

    def delete(self, seqs: list[int]) -> None: ...
    def load(self, after: int, limit: int) -> list[Record]: ...
    def min_seq(self) -> int | None: ...
    def max_seq(self) -> int: ...
    def count(self) -> int: ...
    def close(self) -> None: ...

    @property
    def size_bytes(self) -> int: ...


class MemorySpool:
    """A bounded in-memory spool (not durable)."""

    durable = False
    path: str | None = None

    def __init__(self, max_bytes: int, first_seq: int = 1) -> None:
        self._rows: OrderedDict[int, Record] = OrderedDict()
        self._next = first_seq
        self._bytes = 0
        self._max = max_bytes

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def append(self, records: list[Record]) -> list[int]:
        for rec in records:
            self._rows[rec.seq] = rec
            self._bytes += len(rec.payload)
        if records:
            self._next = records[-1].seq + 1
        dropped = []
        while self._bytes > self._max and self._rows:
            seq, rec = self._rows.popitem(last=False)
            self._bytes -= len(rec.payload)
            dropped.append(seq)
        return dropped

    def delete(self, seqs: list[int]) -> None:
        for seq in seqs:
            rec = self._rows.pop(seq, None)
            if rec is not None:
                self._bytes -= len(rec.payload)

    def load(self, after: int, limit: int) -> list[Record]:
        out = []
        for seq, rec in self._rows.items():  # seqs ascend; skipping is cheap next to publishing
            if seq > after:
                out.append(rec)
                if len(out) >= limit:
                    break
        return out

    def min_seq(self) -> int | None:
        return next(iter(self._rows), None)

    def max_seq(self) -> int:
        return self._next - 1

    def count(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        pass


_SCHEMA = "CREATE TABLE IF NOT EXISTS bursts (seq INTEGER PRIMARY KEY, body BLOB)"


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(_SCHEMA)
    return db


def _pack(records: list[Record]) -> bytes:
    """One burst row: zlib of a JSON line ``[seqs, ids, subjects, payload sizes]`` then the payloads."""
    index = [[r.seq for r in records], [r.id for r in records], [r.subject for r in records]]
    index.append([len(r.payload) for r in records])
    head = json.dumps(index, separators=(",", ":")).encode()
    return zlib.compress(b"\n".join([head, *(r.payload for r in records)]), 1)


def _unpack(body: bytes) -> list[Record]:
    head, _, blob = zlib.decompress(body).partition(b"\n")
    seqs, ids, subjects, sizes = json.loads(head)
    ends = list(itertools.accumulate(size + 1 for size in sizes))
    payloads = [blob[end - size - 1 : end - 1] for size, end in zip(sizes, ends, strict=True)]
    return [_new(Record, fields) for fields in zip(seqs, ids, subjects, payloads, strict=True)]


_new = tuple.__new__  # Record(*fields) without the Python-level __new__ of a NamedTuple


class _Row:
    """The in-memory index of one stored row: its sequences (ascending) and which are deleted; 9 bytes an event."""

    __slots__ = ("dead", "first_live", "live", "seqs", "size")

    def __init__(self, seqs: list[int], size: int) -> None:
        self.seqs = array("q", seqs)
        self.dead = bytearray(len(seqs))  # 1 once the event at that index is deleted
        self.live = len(seqs)
        self.size = size
        self.first_live = 0  # index into seqs: no live sequence before it

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


class SqliteSpool:
    """A durable spool in one SQLite file per process, adopting the files of dead processes.

    Each ``append`` is one row (``_pack``); which events of which row are still live is kept in memory
    (``_Row``: packed arrays, no object per event), so ``delete`` is bookkeeping until a row has none left.
    Rows are written in ascending sequence order; ``_firsts`` finds a sequence's row by bisection.
    """

    durable = True

    def __init__(self, directory: str, max_bytes: int) -> None:
        os.makedirs(directory, exist_ok=True)
        name = f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path: str | None = os.path.join(directory, name + ".db")
        self._file = self.path
        self._lock_fd = os.open(os.path.join(directory, name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._db = _connect(self._file)
        self._max = max_bytes
        self._rows: dict[int, _Row] = {}  # first sequence -> row index, ascending (insertion order)
        self._firsts: list[int] = []  # the rows' first sequences, ascending; may list removed rows (compacted)
        self._count = 0
        self._bytes = 0
        self._next = 1
        self.adopted = self._adopt_orphans(directory)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def _adopt_orphans(self, directory: str) -> int:
        adopted = 0
        for lock_path in sorted(glob.glob(os.path.join(directory, "spool-*.lock"))):
            db_path = lock_path[: -len(".lock")] + ".db"
            if db_path == self._file:
                continue
            fd = os.open(lock_path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # its process is alive
            try:
                if os.path.exists(db_path):
                    adopted += self._adopt(db_path)
                for suffix in (".db", ".db-wal", ".db-shm", ".lock"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock_path[: -len(".lock")] + suffix)
            except sqlite3.DatabaseError as e:
                log.warning("databricks-nats: could not adopt spool %s: %s", db_path, e)
            finally:
                os.close(fd)
        return adopted

    def _adopt(self, db_path: str) -> int:
        """Copy a dead process's events, oldest first, renumbered after ours (one row per 1000 events)."""
        orphan = sqlite3.connect(db_path)
        try:
            tables = {row[0] for row in orphan.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            records: list[Record] = []
            if "events" in tables:  # the one-row-per-event layout of earlier versions
                rows = orphan.execute("SELECT id, subject, payload FROM events ORDER BY seq")
                records += [Record(0, str(i), str(s), bytes(p)) for i, s, p in rows]
            if "bursts" in tables:
                for (body,) in orphan.execute("SELECT body FROM bursts ORDER BY seq"):
                    records += _unpack(body)
        finally:
            orphan.close()
        for i in range(0, len(records), 1000):
            chunk = records[i : i + 1000]
            self._insert([rec._replace(seq=self._next + j) for j, rec in enumerate(chunk)])
        return len(records)

    def append(self, records: list[Record]) -> list[int]:
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
        seqs = [r.seq for r in records]
        size = sum(len(r.payload) for r in records)
        self._db.execute("INSERT INTO bursts (seq, body) VALUES (?, ?)", (seqs[0], _pack(records)))
        self._rows[seqs[0]] = _Row(seqs, size)
        self._firsts.append(seqs[0])
        self._count += len(seqs)
        self._bytes += size
        self._next = seqs[-1] + 1

    def _drop_first(self) -> list[int]:
        first, row = next(iter(self._rows.items()))
        live = row.live_seqs()
        self._count -= len(live)
        self._remove([first])
        return live

    def _remove(self, firsts: list[int]) -> None:
        for i in range(0, len(firsts), 500):
            chunk = firsts[i : i + 500]
            self._db.execute(f"DELETE FROM bursts WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
        for first in firsts:
            self._bytes -= self._rows.pop(first).size
        if len(self._firsts) > 2 * len(self._rows) + 64:  # amortised: drop the removed rows from the index
            self._firsts = list(self._rows)

    def _row_of(self, seq: int) -> _Row | None:
        i = bisect.bisect_right(self._firsts, seq) - 1
        return self._rows.get(self._firsts[i]) if i >= 0 else None

    def delete(self, seqs: list[int]) -> None:
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
        out: list[Record] = []
        for first, row in self._rows.items():
            if row.seqs[-1] <= after:
                continue
            body = self._db.execute("SELECT body FROM bursts WHERE seq = ?", (first,)).fetchone()[0]
            dead = row.dead
            out += [r for i, r in enumerate(_unpack(body)) if r.seq > after and not dead[i]]
            if len(out) >= limit:
                break
        return out[:limit]

    def min_seq(self) -> int | None:
        for row in self._rows.values():  # the first row always holds a live sequence
            while row.dead[row.first_live]:
                row.first_live += 1
            return row.seqs[row.first_live]
        return None

    def max_seq(self) -> int:
        """The highest sequence ever stored by this process (new records must go above it)."""
        return self._next - 1

    def count(self) -> int:
        return self._count

    def close(self) -> None:
        """Close the database; remove the file when it is empty (nothing left to replay)."""
        empty = self.count() == 0
        self._db.close()
        if empty:
            for suffix in (".db", ".db-wal", ".db-shm", ".lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._file[: -len(".db")] + suffix)
        os.close(self._lock_fd)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the inherited lock descriptor without touching the parent's database."""
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


def open_spool(directory: str, max_bytes: int) -> Spool:
    """Open the durable spool, or fall back to memory with one warning when the directory is unusable."""
    try:
        return SqliteSpool(directory, max_bytes)
    except (OSError, sqlite3.Error) as e:
        log.warning(
            "databricks-nats: spool directory %s is not usable (%s); events are held in memory only "
            "and are lost if the process dies",
            directory,
            type(e).__name__,
        )
        return MemorySpool(min(max_bytes, 64 * 1024 * 1024))
