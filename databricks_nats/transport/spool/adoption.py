"""Adoption: copying the events of dead processes' spools into ours, and quarantining damaged files.

See the package docstring, *Adoption* and *Untrusted files*: every file read here is one this process
did not write, so any error reading it is contained, and the file is renamed aside (``Orphan.release``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3

from databricks_nats.transport.spool.base import Record
from databricks_nats.transport.spool.files import Orphan, claim, stems_in
from databricks_nats.transport.spool.rows import unpack_untrusted
from databricks_nats.transport.spool.store import RowStore

__all__ = ["Adoption"]

log = logging.getLogger("databricks_nats")

_ADOPT_CHUNK = 1000  # adopted events per row
_new = tuple.__new__  # Record(*fields) without the Python-level __new__ of a NamedTuple


class Adoption(RowStore):
    """The adopting half of ``SqliteSpool``: dead stems in ``_dir`` (``orphans``) copied into our rows."""

    _stem: str  # ours: set by ``SqliteSpool`` once it holds it

    def __init__(self, directory: str, max_bytes: int, memory_max_bytes: int | None = None) -> None:
        super().__init__(max_bytes, memory_max_bytes)
        self._dir = directory
        self.adopted = 0
        self.quarantined: list[str] = []

    def orphans(self) -> list[str]:
        """Stems in the directory that are not ours (alive or dead: cheap, no lock taken)."""
        stems = stems_in(self._dir)
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
            fd = claim(lock_path, create=not os.path.exists(lock_path))
            if fd is None:
                continue
            orphan = Orphan(stem, fd)
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

    def _adopt(self, orphan: Orphan) -> int:
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
                            records = unpack_untrusted(row[0] if row else None, n)
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

    def _lost_file(self, orphan: Orphan, problem: str, lost: int = 0, unknown: int = 0, adopted: int = 0) -> None:
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
