"""The durable spool: every event not yet acknowledged, in emit order, surviving a killed process.

``SqliteSpool`` keeps one SQLite database per process (WAL, ``synchronous=NORMAL``: a committed row
survives the process being killed; only an OS crash may lose the last commits) in the namespace's
spool directory, locked with ``flock`` for the process's lifetime. At start, a process adopts the
spools of dead processes (their lock is free): it copies their rows, oldest first, into its own spool
and deletes them, so whatever they never got acknowledged is published again with its original id.

Bounded: when the stored payload bytes exceed ``max_bytes`` the oldest rows are dropped (and counted).
``MemorySpool`` has the same contract without durability; it is the fallback when the directory is
not writable.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import sqlite3
import uuid
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


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, subject TEXT, payload BLOB)"
)


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(_SCHEMA)
    return db


class SqliteSpool:
    """A durable spool in one SQLite file per process, adopting the files of dead processes."""

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
        self.adopted = self._adopt_orphans(directory)
        row = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0), COUNT(*) FROM events").fetchone()
        self._bytes, self._count = int(row[0]), int(row[1])
        self._next = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]) + 1

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
                    self._db.execute("ATTACH DATABASE ? AS orphan", (db_path,))
                    try:
                        cur = self._db.execute(
                            "INSERT INTO events (id, subject, payload) "
                            "SELECT id, subject, payload FROM orphan.events ORDER BY seq"
                        )
                        adopted += cur.rowcount
                    finally:
                        self._db.execute("DETACH DATABASE orphan")
                for suffix in (".db", ".db-wal", ".db-shm", ".lock"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock_path[: -len(".lock")] + suffix)
            except sqlite3.DatabaseError as e:
                log.warning("databricks-nats: could not adopt spool %s: %s", db_path, e)
            finally:
                os.close(fd)
        return adopted

    def append(self, records: list[Record]) -> list[int]:
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT INTO events (seq, id, subject, payload) VALUES (?, ?, ?, ?)", records)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if records:
            self._next = records[-1].seq + 1
        self._bytes += sum(len(r.payload) for r in records)
        self._count += len(records)
        return self._drop_oldest() if self._bytes > self._max else []

    def _drop_oldest(self) -> list[int]:
        dropped = []
        excess = self._bytes - self._max
        for seq, size in self._db.execute("SELECT seq, LENGTH(payload) FROM events ORDER BY seq"):
            dropped.append(seq)
            excess -= size
            if excess <= 0:
                break
        self.delete(dropped)
        return dropped

    def delete(self, seqs: list[int]) -> None:
        if not seqs:
            return
        db = self._db
        db.execute("BEGIN")
        freed = removed = 0
        for i in range(0, len(seqs), 500):
            chunk = seqs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            freed += db.execute(
                f"SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM events WHERE seq IN ({marks})", chunk
            ).fetchone()[0]
            removed += db.execute(f"DELETE FROM events WHERE seq IN ({marks})", chunk).rowcount
        db.execute("COMMIT")
        self._bytes -= int(freed)
        self._count -= removed

    def load(self, after: int, limit: int) -> list[Record]:
        rows = self._db.execute(
            "SELECT seq, id, subject, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()
        return [Record(int(s), str(i), str(sub), bytes(p)) for s, i, sub, p in rows]

    def min_seq(self) -> int | None:
        row = self._db.execute("SELECT MIN(seq) FROM events").fetchone()
        return None if row[0] is None else int(row[0])

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
