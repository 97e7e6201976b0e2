"""The durable spool: every event not yet acknowledged, in emit order, surviving a killed process.

``SqliteSpool`` keeps one SQLite database per process (WAL, ``synchronous=NORMAL``: a committed row
survives the process being killed; only an OS crash may lose the last commits) in the namespace's
spool directory. A burst of events is one row (zlib-compressed: one insert, a few pages); a row is
deleted once all its events are.

**Lock protocol.** A spool is a *stem* ``spool-<pid>-<random>``: ``<stem>.lock`` (created with
``O_EXCL``, ``flock``-ed for the owner's whole life, never deleted while in use) and ``<stem>.db``
(created after the lock is held). Whoever holds the ``flock`` of a stem's lock file owns the stem; a stem
whose lock can be taken belongs to a dead process. A holder checks, after taking the lock, that the lock
file at that path is still the inode it locked (else another process adopted and removed it meanwhile:
skip). Files are removed only by the stem's holder, the lock file last. So two processes adopting the
same directory at once each get a disjoint set of stems, and each adopted event is copied once.

**Adoption.** At start and periodically (``adopt_orphans``, called by the publisher's worker), a process
copies the events of dead stems, oldest first and renumbered after its own, into its own spool, then
removes the dead stem's files; whatever they never got acknowledged is published again with its
original id (events of a partly acknowledged row too: JetStream drops those as duplicates). A copy that
could only be kept in memory (disk full) keeps the dead stem locked, files untouched, until the copy is on
disk or acknowledged.

**Untrusted files.** Every file this process did not just write is read defensively: any error while
reading one (not a database, malformed pages, a zlib/JSON/shape error in a row) is contained. The rows
that decode are adopted; the file is renamed aside (``<name>.quarantined-<time>``, never read again), a
warning names it, and the events it held are counted (``dropped.spool_corrupt``: a row's event count is
stored beside its body, so it survives a damaged body; rows or files whose count is unreadable are
counted in ``dropped.spool_corrupt_unknown``). A row of our own file that cannot be read back is dropped
and counted the same way.

**Full or failing disk.** A row that cannot be written stays in memory (bounded by ``memory_max_bytes``,
oldest dropped beyond it as ``dropped.spool_unwritable``) and is written at the next append or
``retry``; deleting rows of acknowledged events updates memory first, the database when it can (a row
whose delete failed is replayed by a later process: a duplicate JetStream drops). Nothing here raises.

Bounded: when the stored payload bytes exceed ``max_bytes`` the oldest rows are dropped (and counted),
then the oldest events of a burst that alone exceeds it. ``MemorySpool`` has the same contract without
durability; it is the fallback when the directory is not writable at all.
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
import threading
import time
import uuid
import zlib
from array import array
from collections import Counter, OrderedDict
from typing import Any, NamedTuple, Protocol

__all__ = ["MemorySpool", "Record", "Spool", "SqliteSpool", "forked", "open_spool"]

log = logging.getLogger("databricks_nats")

_MEMORY_MAX = 64 * 1024 * 1024  # bytes of rows kept in memory when the disk refuses them
_ADOPT_CHUNK = 1000  # adopted events per row


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
        self._drops: list[tuple[str, list[int], int]] = []
        self.lock = threading.RLock()

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

    def note_drops(self, reason: str, seqs: list[int]) -> None:
        self._drops.append((reason, seqs, len(seqs)))

    def take_drops(self) -> list[tuple[str, list[int], int]]:
        out, self._drops = self._drops, []
        return out

    def take_errors(self) -> list[str]:
        return []


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


_RAW = b"\0"  # first byte of a row stored uncompressed (a zlib stream never starts with it), then its CRC-32
_COMPRESS_FROM = 4096  # bytes: smaller rows (one event in immediate mode) skip zlib's ~20 us set-up


def _pack(records: list[Record]) -> bytes:
    """One burst row: a JSON line ``[seqs, ids, subjects, payload sizes]`` then the payloads; zlib-compressed
    unless small (then ``_RAW``, a CRC-32 and the bytes as they are: damage is detected either way)."""
    index = [[r.seq for r in records], [r.id for r in records], [r.subject for r in records]]
    index.append([len(r.payload) for r in records])
    head = json.dumps(index, separators=(",", ":")).encode()
    raw = b"\n".join([head, *(r.payload for r in records)])
    if len(raw) >= _COMPRESS_FROM:
        return zlib.compress(raw, 1)
    return _RAW + zlib.crc32(raw).to_bytes(4, "big") + raw


def _body(body: bytes) -> bytes:
    if body[:1] != _RAW:
        return zlib.decompress(body)
    raw = body[5:]
    if len(body) < 5 or zlib.crc32(raw) != int.from_bytes(body[1:5], "big"):
        raise ValueError("row checksum mismatch")
    return raw


def _unpack(body: bytes) -> list[Record]:
    head, _, blob = _body(body).partition(b"\n")
    seqs, ids, subjects, sizes = json.loads(head)
    ends = list(itertools.accumulate(size + 1 for size in sizes))
    payloads = [blob[end - size - 1 : end - 1] for size, end in zip(sizes, ends, strict=True)]
    return [_new(Record, fields) for fields in zip(seqs, ids, subjects, payloads, strict=True)]


def _unpack_untrusted(body: Any, n: Any) -> list[Record]:
    """``_unpack`` for a row of a file we did not just write: every field checked; ValueError when wrong."""
    if not isinstance(body, bytes):
        raise ValueError(f"row body is {type(body).__name__}")
    head, _, blob = _body(body).partition(b"\n")
    seqs, ids, subjects, sizes = json.loads(head)
    if not (len(seqs) == len(ids) == len(subjects) == len(sizes)) or (n is not None and n != len(ids)):
        raise ValueError("row index lengths disagree")
    if not all(type(s) is int and s >= 0 for s in sizes) or sum(sizes) + max(0, len(sizes) - 1) != len(blob):
        raise ValueError("row payload sizes disagree with its body")
    if not all(type(i) is str and i for i in ids) or not all(type(s) is str and s for s in subjects):
        raise ValueError("row ids or subjects are not strings")
    return _unpack(body)


_new = tuple.__new__  # Record(*fields) without the Python-level __new__ of a NamedTuple


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


_forked = False
_inherited: list[Any] = []  # a forked child's copies of its parent's connections: never closed in the child


def forked() -> bool:
    """Whether this process is a forked child of a process that imported this module."""
    return _forked


def _mark_forked() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_forked)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class _Orphan:
    """A dead process's stem whose lock we hold: adopted, kept until its events are safely ours, then removed."""

    def __init__(self, stem: str, fd: int) -> None:
        self.stem = stem
        self.fd = fd
        self.corrupt = False

    def release(self, remove: bool) -> None:
        """Remove its files (or rename them aside when corrupt), the lock file last; then unlock."""
        try:
            if remove:
                db = self.stem + ".db"
                if self.corrupt:
                    tag = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
                    for suffix in ("", "-wal"):
                        if os.path.exists(db + suffix):
                            with contextlib.suppress(OSError):
                                os.rename(db + suffix, f"{db}{suffix}.quarantined-{tag}")
                for suffix in (".db", ".db-wal", ".db-shm", ".lock"):
                    _unlink(self.stem + suffix)
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)


def _claim(lock_path: str, create: bool) -> int | None:
    """The stem's lock, if its owner is dead and nobody else holds or removed it; else None (never raises)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
    except OSError:
        return None  # removed by its adopter meanwhile (or unreadable): not ours
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held, there = os.fstat(fd), os.stat(lock_path)
        if (held.st_ino, held.st_dev) == (there.st_ino, there.st_dev):
            return fd
    except OSError:
        pass  # alive (locked), or the file was removed/replaced after we opened it
    os.close(fd)
    return None


class SqliteSpool:
    """A durable spool in one SQLite file per process, adopting the files of dead processes.

    Each ``append`` is one row (``_pack``); which events of which row are still live is kept in memory
    (``_Row``: packed arrays, no object per event), so ``delete`` is bookkeeping until a row has none left.
    Rows are written in ascending sequence order; ``_firsts`` finds a sequence's row by bisection.
    Every method is safe from any thread (``lock``) and none raises once the spool is open.
    """

    durable = True

    def __init__(
        self, directory: str, max_bytes: int, *, adopt: bool = True, memory_max_bytes: int | None = None
    ) -> None:
        self.lock = threading.RLock()
        self._dir = directory
        self._max = max_bytes
        self._mem_max = min(max_bytes, _MEMORY_MAX) if memory_max_bytes is None else memory_max_bytes
        self._rows: dict[int, _Row] = {}  # first sequence -> row index, ascending (insertion order)
        self._firsts: list[int] = []  # the rows' first sequences, ascending; may list removed rows (compacted)
        self._count = 0
        self._bytes = 0
        self._mem_bytes = 0  # payload bytes of rows held only in memory
        self._mem_rows = 0
        self._stale: list[int] = []  # rows removed from the index whose delete the database refused
        self._next = 1
        self._held: list[_Orphan] = []  # adopted stems kept until their events are safely ours
        self._drops: list[tuple[str, list[int], int]] = []  # (reason, our sequences, events) not yet reported
        self._errors: list[str] = []
        self.dropped: Counter[str] = Counter()  # every drop, by reason (cumulative)
        self.adopted = 0
        self.quarantined: list[str] = []
        self._db: sqlite3.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._caller_writes = False
        self._closed = False
        os.makedirs(directory, exist_ok=True)
        self._lock_fd = -1
        for _ in range(8):
            stem = os.path.join(directory, f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            fd = os.open(stem + ".lock", os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # an adopter probing the new name took it first: it removes it; take another
                os.close(fd)
                continue
            self._lock_fd, self._stem = fd, stem
            break
        else:
            raise OSError("could not claim a spool file name")
        self.path: str | None = self._stem + ".db"
        self._file = self.path
        try:
            self._open_db()
            if adopt:
                self.adopted = self.adopt_orphans()
        except BaseException:
            self._abandon()
            raise

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

    # ---- adoption -----------------------------------------------------------------------------------

    def orphans(self) -> list[str]:
        """Stems in the directory that are not ours (alive or dead: cheap, no lock taken)."""
        stems = {p[: -len(".lock")] for p in glob.glob(os.path.join(glob.escape(self._dir), "spool-*.lock"))}
        stems |= {p[: -len(".db")] for p in glob.glob(os.path.join(glob.escape(self._dir), "spool-*.db"))}
        stems.discard(self._stem)
        return sorted(stems)

    def adopt_orphans(self, min_seq: int = 0) -> int:
        """Copy the events of dead processes' spools into ours (renumbered from at least ``min_seq``).

        Returns how many were adopted. Never raises; a damaged file is quarantined and its events counted.
        Called by one thread at a time (the publisher's worker); the lock is taken per chunk of rows, so an
        ``emit`` in immediate mode never waits for a whole file to be copied.
        """
        adopted = 0
        with self.lock:
            if self._closed:
                return 0
            self._release_held()
            self._next = max(self._next, min_seq)
        for stem in self.orphans():
            if self._mem_bytes > self._mem_max // 2:
                break  # the disk refuses our rows: adopt once it takes them
            lock_path = stem + ".lock"
            fd = _claim(lock_path, create=not os.path.exists(lock_path))
            if fd is None:
                continue
            orphan = _Orphan(stem, fd)
            try:
                adopted += self._adopt(orphan)
            except Exception as e:  # noqa: BLE001 - anything unforeseen: leave the file for later, say why
                with self.lock:
                    self._error(f"adopting {stem}.db: {type(e).__name__}: {e}")
                log.warning("databricks-nats: could not adopt spool %s.db: %s", stem, e)
                orphan.release(remove=False)
                continue
            with self.lock:
                self._held.append(orphan)
        with self.lock:
            self._release_held()
        return adopted

    def _adopt(self, orphan: _Orphan) -> int:
        """Copy one dead stem's events (oldest first) into rows of ours; count and flag what cannot be read."""
        db_path = orphan.stem + ".db"
        if not os.path.exists(db_path):
            if os.path.exists(db_path + "-wal"):
                orphan.corrupt = True
                with self.lock:
                    self._lost_file(orphan, "its database file is missing")
            return 0
        if os.path.getsize(db_path) == 0 and not os.path.exists(db_path + "-wal"):
            return 0  # created, never written: nothing to replay
        chunk: list[Record] = []
        adopted = lost = unknown = 0
        problem = ""
        try:
            src = sqlite3.connect(db_path, timeout=0, isolation_level=None)
        except Exception as e:  # noqa: BLE001
            src, problem, unknown = None, f"{type(e).__name__}: {e}", 1
        if src is not None:
            try:
                tables = {row[0] for row in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables & {"bursts", "events"}:
                    raise ValueError("no spool table")
                if "events" in tables:  # the one-row-per-event layout of earlier versions
                    for i, s, p in src.execute("SELECT id, subject, payload FROM events ORDER BY seq"):
                        if type(i) is not str or type(s) is not str or not isinstance(p, bytes):
                            raise ValueError("unreadable event row")
                        chunk.append(_new(Record, (0, i, s, p)))
                        if len(chunk) >= _ADOPT_CHUNK:
                            adopted += self._insert_adopted(chunk)
                            chunk = []
                if "bursts" in tables:
                    columns = {row[1] for row in src.execute("PRAGMA table_info(bursts)")}
                    counted = "n" in columns
                    keys = src.execute(f"SELECT seq, {'n' if counted else 'NULL'} FROM bursts ORDER BY seq").fetchall()
                    for seq, n in keys:
                        try:
                            row = src.execute("SELECT body FROM bursts WHERE seq = ?", (seq,)).fetchone()
                            records = _unpack_untrusted(row[0] if row else None, n)
                        except Exception as e:  # noqa: BLE001 - a damaged row: the others still come
                            problem = problem or f"row {seq}: {type(e).__name__}: {e}"
                            if isinstance(n, int) and 0 <= n < 1 << 31:
                                lost += n
                            else:
                                unknown += 1
                            continue
                        chunk += records
                        if len(chunk) >= _ADOPT_CHUNK:
                            adopted += self._insert_adopted(chunk)
                            chunk = []
            except Exception as e:  # noqa: BLE001 - not a database, malformed, truncated: what was read stays
                problem = problem or f"{type(e).__name__}: {e}"
                if not lost:
                    unknown += 1
            finally:
                with contextlib.suppress(Exception):
                    src.close()
        if chunk:
            adopted += self._insert_adopted(chunk)
        if problem:
            orphan.corrupt = True
            with self.lock:
                self._drop("spool_corrupt", [], lost)
                self._drop("spool_corrupt_unknown", [], unknown)
                self._lost_file(orphan, problem, lost, unknown, adopted)
        return adopted

    def _lost_file(self, orphan: _Orphan, problem: str, lost: int = 0, unknown: int = 0, adopted: int = 0) -> None:
        self.quarantined.append(orphan.stem + ".db")
        self._error(f"damaged spool {orphan.stem}.db: {problem}")
        log.warning(
            "databricks-nats: spool file %s.db is damaged (%s): %d event(s) adopted, %d lost%s; "
            "it is renamed aside (.quarantined-*) and never read again",
            orphan.stem,
            problem,
            adopted,
            lost,
            f" (+{unknown} unreadable row(s)/file)" if unknown else "",
        )

    def _insert_adopted(self, records: list[Record]) -> int:
        with self.lock:
            if self._closed:
                raise RuntimeError("spool closed while adopting")
            start = self._next
            self._insert([rec._replace(seq=start + j) for j, rec in enumerate(records)])
            return len(records)

    def _release_held(self) -> None:
        """Remove the adopted stems once none of our rows is only in memory (their copies are safe)."""
        if self._held and (not self._mem_rows or self._closed):
            held, self._held = self._held, []
            for orphan in held:
                orphan.release(remove=not self._mem_rows)

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
            self._db.execute(
                "INSERT INTO bursts (seq, n, body) VALUES (?, ?, ?)", (first, len(records), _pack(records))
            )
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
            records = _unpack(found[0])
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

    def close(self) -> None:
        """Close the database; remove the file when it is empty (nothing left to replay). Never raises."""
        with self.lock:
            if self._closed:
                return
            if self._mem_rows:
                self._persist_memory()
            if self._mem_rows:
                lost = self.unpersisted
                self.dropped["spool_unwritable"] += lost
                log.error(
                    "databricks-nats: %d event(s) could not be written to the spool %s and are lost", lost, self._file
                )
            if self._stale:
                self._delete_rows([])
            self._trim_partly_acknowledged()
            empty = self.count() == 0
            self._closed = True
            self._release_held()
            if self._checkpointer is not None:
                with contextlib.suppress(Exception):
                    self._checkpointer.close()
            if self._db is not None:
                with contextlib.suppress(Exception):
                    self._db.close()
            if empty:
                for suffix in (".db", ".db-wal", ".db-shm", ".lock"):
                    _unlink(self._stem + suffix)
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)

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
                self._db.execute("UPDATE bursts SET n = ?, body = ? WHERE seq = ?", (len(live), _pack(live), first))
            except (sqlite3.Error, OSError):
                return  # the disk is full: replayed whole, JetStream drops the repeats

    def _abandon(self) -> None:
        """Opening failed: release what was taken (the files stay for a later process to adopt)."""
        self._closed = True
        for orphan in self._held:
            orphan.release(remove=False)
        self._held = []
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
        if self._count == 0:
            for suffix in (".db", ".db-wal", ".db-shm", ".lock"):
                _unlink(self._stem + suffix)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the inherited descriptors without touching the parent's database."""
        self._closed = True
        _inherited.extend(c for c in (self._db, self._checkpointer) if c is not None)  # never closed here
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
        for orphan in self._held:
            with contextlib.suppress(OSError):
                os.close(orphan.fd)


def open_spool(directory: str, max_bytes: int) -> Spool:
    """Open the durable spool, or fall back to memory with one warning when the directory is unusable."""
    try:
        return SqliteSpool(directory, max_bytes)
    except Exception as e:  # noqa: BLE001 - never raise into configure(): memory instead
        log.warning(
            "databricks-nats: spool directory %s is not usable (%s: %s); events are held in memory only "
            "and are lost if the process dies",
            directory,
            type(e).__name__,
            e,
        )
        return MemorySpool(min(max_bytes, _MEMORY_MAX))
