"""A hypothesis state machine of the spool: emit, ack, crash, restart, corrupt, disk full (issue 13).

Invariant, after every step: every emitted event is acknowledged, still pending in the live spool, or
counted as dropped with a reason — never silently gone. Allowed by the documented contract, and checked
to be the only exceptions: an event acknowledged before a crash may come back once (its row was only
partly acknowledged: replayed whole, JetStream drops the repeat), and rows the disk refused die with a
process that is killed (they were only in memory). Nothing the spool does raises; ``count`` and ``min_seq``
always agree with what ``load`` returns; no descriptor is left open at the end.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from databricks_nats.transport.spool import Record, SqliteSpool


class _Disk:
    """Our spool's connection, whose writes fail as on a full disk while ``full`` is set."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.full = False

    def execute(self, sql: str, *args: Any) -> Any:
        if self.full and sql.lstrip().upper().startswith(("INSERT", "DELETE", "UPDATE")):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def close(self) -> None:
        self.db.close()


class SpoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fds = len(os.listdir("/proc/self/fd"))
        self.dir = tempfile.mkdtemp(prefix="spool-sm-")
        self.emitted: set[str] = set()
        self.acked: Counter[str] = Counter()
        self.acked_before_crash: set[str] = set()
        self.died_in_memory: set[str] = set()  # rows the disk refused, lost with a killed process
        self.unknown: set[str] = set()  # events of a file too damaged to count (dropped.spool_corrupt_unknown)
        self.disk: _Disk | None = None
        self.counted = 0  # drops counted by spools that are gone
        self.full = False
        self.n = 0
        self.spool = self._open()

    def _open(self) -> SqliteSpool:
        spool = SqliteSpool(self.dir, 20_000, memory_max_bytes=6_000)
        self.disk = None
        if spool._db is not None:
            self.disk = _Disk(spool._db)
            self.disk.full = self.full
            spool._db = self.disk  # type: ignore[assignment]
        return spool

    def pending(self) -> list[Record]:
        return self.spool.load(0, 10**6)

    @rule(n=st.integers(1, 12), size=st.integers(10, 400))
    def emit(self, n: int, size: int) -> None:
        first = self.spool.max_seq() + 1
        records = []
        for seq in range(first, first + n):
            self.n += 1
            records.append(Record(seq, f"id-{self.n}", "dbx.w.e.s.x.a", b"x" * size))
        self.emitted.update(r.id for r in records)
        self.counted += len(self.spool.append(records))  # the bound's drops: the publisher counts them (spool_full)

    @rule(k=st.integers(1, 30), skip=st.integers(0, 5))
    def ack(self, k: int, skip: int) -> None:
        chosen = self.pending()[skip : skip + k]
        for rec in chosen:
            assert self.acked[rec.id] == 0 or rec.id in self.acked_before_crash, f"{rec.id} acknowledged twice"
            self.acked[rec.id] += 1
        self.spool.delete([r.seq for r in chosen])

    @rule(full=st.booleans())
    def disk(self, full: bool) -> None:
        self.full = full
        if self.disk is not None:
            self.disk.full = full

    @rule()
    def retry(self) -> None:
        self.spool.retry()

    @rule(corrupt=st.sampled_from(["none", "none", "row", "file"]))
    def crash_and_restart(self, corrupt: str) -> None:
        """The process is killed (no close: the lock goes with it), maybe its file is damaged, a new one starts."""
        old = self.spool
        pending = old.load(0, 10**6)
        self.died_in_memory |= {r.id for r in pending if r.seq in set(old.unpersisted_seqs())}
        self.acked_before_crash |= set(self.acked)
        self.counted += sum(old.dropped.values())
        assert old.path is not None
        old._closed = True  # what dying does: the connection and every descriptor go, nothing is cleaned up
        if old._db is not None:
            old._db.close()
        for orphan in old._held:
            os.close(orphan.fd)
        os.close(old._lock_fd)
        if corrupt != "none" and os.path.exists(old.path):
            db = sqlite3.connect(old.path, isolation_level=None)
            try:
                if corrupt == "row":
                    row = db.execute("SELECT seq FROM bursts ORDER BY seq LIMIT 1").fetchone()
                    if row:
                        db.execute("UPDATE bursts SET body = x'deadbeef' WHERE seq = ?", row)
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                db.close()
            if corrupt == "file":
                with open(old.path, "r+b") as f:
                    f.write(b"\0" * 100)  # the header: not a database any more
        self.spool = self._open()
        if self.spool.dropped["spool_corrupt_unknown"]:
            self.unknown |= {r.id for r in pending} - {r.id for r in self.pending()}

    @rule()
    def clean_restart(self) -> None:
        if self.full:  # rows partly acknowledged cannot be trimmed at close: they come back whole
            self.acked_before_crash |= set(self.acked)
        self.spool.close()
        self.counted += sum(self.spool.dropped.values())
        self.spool = self._open()

    @invariant()
    def every_event_is_acked_pending_or_counted(self) -> None:
        pending = self.pending()
        ids = [r.id for r in pending]
        assert len(ids) == len(set(ids)), "an event pending twice"
        assert self.spool.count() == len(pending)
        assert self.spool.min_seq() == (pending[0].seq if pending else None)
        assert set(ids) <= self.emitted
        replayed = set(ids) & set(self.acked)
        assert replayed <= self.acked_before_crash, "an acknowledged event came back without a crash"
        gone = self.emitted - set(self.acked) - set(ids) - self.died_in_memory - self.unknown
        counted = self.counted + sum(self.spool.dropped.values())
        assert len(gone) <= counted, f"{len(gone)} events gone, {counted} counted as dropped"

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        assert len(os.listdir("/proc/self/fd")) <= self.fds, "a descriptor was left open"


SpoolMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SPOOL_SM_EXAMPLES", "25")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_spool_state_machine = SpoolMachine.TestCase
