"""The spool against damaged files, a disk that refuses writes, concurrent adopters and live adoption (issue 13).

Each test names the numbered failure of issue 13 it guards; each failed on the code before the fix.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import databricks_nats
from databricks_nats import _api
from databricks_nats.model.events import new_event
from databricks_nats.transport import storage
from databricks_nats.transport.spool import Record, SqliteSpool

_DEAD = r"""
import os, sys
from databricks_nats.transport.spool import Record, SqliteSpool
directory, tag, rows, per_row, subject = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
spool = SqliteSpool(directory, 1 << 30, adopt=False) if "adopt" in SqliteSpool.__init__.__code__.co_varnames else None
if spool is None:  # the code before issue 13 adopted at open: a directory of its own, then moved in
    import shutil, tempfile
    own = tempfile.mkdtemp()
    spool = SqliteSpool(own, 1 << 30)
seq = 0
for _ in range(rows):
    burst = []
    for _ in range(per_row):
        seq += 1
        payload = b'{"id":"%s-%d","pad":"%s"}' % (tag.encode(), seq, b"x" * 200)
        burst.append(Record(seq, f"{tag}-{seq}", subject, payload))
    spool.append(burst)
if spool.path and os.path.dirname(spool.path) != directory:
    spool._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    stem = os.path.basename(spool.path)[:-3]
    for suffix in (".db", ".db-wal", ".lock"):
        src = os.path.join(os.path.dirname(spool.path), stem + suffix)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(directory, stem + suffix))
os._exit(0)  # killed: no close, the lock is released by the kernel
"""


def dead_spool(
    directory: Path, tag: str, rows: int = 3, per_row: int = 10, subject: str = "dbx.w.e.mlflow.run.metrics.a"
) -> Path:
    """A spool left by a process that died holding ``rows`` bursts of ``per_row`` events (ids ``<tag>-<n>``)."""
    directory.mkdir(parents=True, exist_ok=True)
    before = set(directory.glob("spool-*.db"))
    subprocess.run([sys.executable, "-c", _DEAD, str(directory), tag, str(rows), str(per_row), subject], check=True)
    (db,) = set(directory.glob("spool-*.db")) - before
    conn = sqlite3.connect(db, isolation_level=None)
    try:  # everything in the main file, so byte-level damage hits real rows
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return db


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def spool_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".db-shm"))


def _damage_row(db: Path, which: int = 1) -> None:
    """Flip 40 bytes in the middle of one stored burst (zlib then fails its checksum)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        seq, body = conn.execute("SELECT seq, body FROM bursts ORDER BY seq").fetchall()[which]
        body = bytearray(body)
        mid = len(body) // 2
        body[mid : mid + 40] = bytes(b ^ 0xFF for b in body[mid : mid + 40])
        conn.execute("UPDATE bursts SET body = ? WHERE seq = ?", (bytes(body), seq))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


# ---- item 1: a damaged spool left by a dead process ------------------------------------------------------


def test_a_damaged_dead_spool_is_quarantined_counted_and_never_raises_into_the_api(
    tmp_path: Path, make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13 item 1: one damaged burst in a dead process's spool; configure/emit/flush/stats never raise.

    The readable bursts are replayed, the damaged one's events are counted (``dropped.spool_corrupt``), the
    file is renamed aside and never read again, a warning names it, and 200 emits leak no descriptor or file.
    """
    settings = make_settings("nats://127.0.0.1:1", connect_timeout=0.2)
    spool_dir = Path(settings.spool_path)
    db = dead_spool(spool_dir, "dead", rows=3, per_row=10)
    _damage_row(db, which=1)
    fds = open_fds()
    with caplog.at_level(logging.WARNING, logger="databricks_nats"):
        databricks_nats.configure(**{k: getattr(settings, k) for k in ("url", "spool_dir", "workspace", "env")},
                                  connect_timeout=0.2, detect_context=False)  # fmt: skip
        for i in range(200):
            data = {"experiment_id": "1", "run_id": "r", "metrics": {"step": i}, "points": 1, "final": False}
            assert databricks_nats.emit("mlflow.run.metrics", data) is not None
        assert not databricks_nats.flush(0.5).ok  # nothing reachable: not ok, and no exception
        deadline = time.monotonic() + 10
        while databricks_nats.stats()["dropped"].get("spool_corrupt") is None and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = databricks_nats.stats()
    assert stats["replayed"] == 20
    assert stats["dropped"] == {"spool_corrupt": 10}
    assert stats["pending"] == 220
    assert any(str(db) in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    names = spool_files(spool_dir)
    assert [n for n in names if ".quarantined-" in n]
    assert not (spool_dir / db.name).exists()
    assert len([n for n in names if n.endswith(".db")]) == 1  # ours only: no new spool per emit
    databricks_nats.shutdown(timeout=0)
    assert open_fds() <= fds
    again = SqliteSpool(str(spool_dir), 1 << 20)  # the quarantined file is never read again
    assert (again.adopted, dict(again.dropped)) == (220, {})
    again.close()


@pytest.mark.parametrize("damage", ["zeroed", "truncated", "bit-flipped", "garbage"])
def test_damaged_files_of_every_kind_are_contained(tmp_path: Path, damage: str) -> None:
    """Issue 13 items 1, 2: zeroed, truncated, bit-flipped pages or not a database at all: never raises, counted.

    Intact rows are adopted, the rest counted as ``spool_corrupt`` (by the stored count) or
    ``spool_corrupt_unknown`` (count unreadable); adopted + counted covers every event the file held.
    """
    db = dead_spool(tmp_path, "d", rows=8, per_row=50)
    data = bytearray(db.read_bytes())
    if damage == "zeroed":
        data = bytearray(len(data))
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "bit-flipped":
        for offset in range(4096 + 1000, len(data), 1531):  # past the header: row pages
            data[offset] ^= 0x5A
    else:
        data = bytearray(b"not a database at all " * 100)
    db.write_bytes(bytes(data))
    fds = open_fds()
    spool = SqliteSpool(str(tmp_path), 1 << 24)
    drops = {reason: n for reason, _, n in spool.take_drops()}
    assert spool.adopted + drops.get("spool_corrupt", 0) == 400 or drops.get("spool_corrupt_unknown", 0) > 0
    assert spool.adopted < 400
    assert sum(drops.values()) > 0
    assert spool.quarantined == [str(db)[:-3] + ".db"]
    assert glob.glob(str(db) + ".quarantined-*")
    assert not db.exists()
    assert {r.id for r in spool.load(0, 1000)} <= {f"d-{n}" for n in range(1, 401)}
    kept = spool.count()
    spool.close()
    assert open_fds() == fds
    again = SqliteSpool(str(tmp_path), 1 << 24)
    assert (again.adopted, again.take_drops()) == (kept, [])  # what we kept, once; the quarantined file never
    again.close()


def test_an_unreadable_row_of_our_own_file_is_dropped_and_counted_not_raised(tmp_path: Path) -> None:
    """Issue 13 item 1: ``load`` of a row damaged under us drops that row (counted), the others still load."""
    spool = SqliteSpool(str(tmp_path), 1 << 24)
    for first in (1, 11, 21):
        spool.append([Record(s, f"id-{s}", "dbx.w.e.s.x.a", b"{}") for s in range(first, first + 10)])
    assert spool._db is not None
    spool._db.execute("UPDATE bursts SET body = x'00112233' WHERE seq = 11")
    assert [r.seq for r in spool.load(0, 100)] == [*range(1, 11), *range(21, 31)]
    assert spool.take_drops() == [("spool_corrupt", list(range(11, 21)), 10)]
    assert (spool.count(), spool.min_seq()) == (20, 1)
    spool.close()


# ---- item 2: a disk that refuses writes ---------------------------------------------------------------


class _FullDisk:
    """A connection whose writes fail as on a full disk while ``full`` is set."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.full = True

    def execute(self, sql: str, *args: Any) -> Any:
        if self.full and sql.lstrip().upper().startswith(("INSERT", "DELETE", "UPDATE")):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def close(self) -> None:
        self.db.close()


def test_a_full_disk_keeps_rows_in_memory_deletes_in_memory_first_and_writes_them_later(tmp_path: Path) -> None:
    """Issue 13 item 2: no IndexError from ``min_seq`` when deletes fail; refused rows kept and written later."""
    spool = SqliteSpool(str(tmp_path), 1 << 24)
    spool.append([Record(s, f"id-{s}", "dbx.w.e.s.x.a", b"{}") for s in range(1, 11)])
    disk = _FullDisk(spool._db)  # type: ignore[arg-type]
    spool._db = disk  # type: ignore[assignment]
    spool.delete(list(range(1, 11)))  # the row's delete fails: memory is updated first
    assert (spool.count(), spool.min_seq()) == (0, None)
    spool.append([Record(s, f"id-{s}", "dbx.w.e.s.x.a", b"{}") for s in range(11, 21)])  # refused: in memory
    assert (spool.count(), spool.min_seq(), spool.unpersisted) == (10, 11, 10)
    assert [r.seq for r in spool.load(0, 100)] == list(range(11, 21))
    assert any("disk is full" in e for e in spool.take_errors())
    disk.full = False
    spool.retry()
    assert spool.unpersisted == 0
    assert [row[0] for row in disk.db.execute("SELECT seq FROM bursts")] == [11]  # stale row deleted, new written
    spool.close()


def test_rows_the_disk_refuses_are_bounded_in_memory_and_counted_when_dropped(tmp_path: Path) -> None:
    """Issue 13 item 2: beyond ``memory_max_bytes`` the oldest refused rows are dropped as ``spool_unwritable``."""
    spool = SqliteSpool(str(tmp_path), 1 << 24, memory_max_bytes=1000)
    spool._db = _FullDisk(spool._db)  # type: ignore[arg-type,assignment]
    for first in range(1, 101, 10):
        spool.append([Record(s, f"id-{s}", "dbx.w.e.s.x.a", b"x" * 50) for s in range(first, first + 10)])
    drops = spool.take_drops()
    assert {reason for reason, _, _ in drops} == {"spool_unwritable"}
    dropped = sum(n for _, _, n in drops)
    assert dropped + spool.count() == 100
    assert spool.unpersisted == spool.count() <= 20
    spool.close()


# ---- item 4: processes adopting the same directory at once ------------------------------------------------

_ADOPTER = r"""
import json, os, sys, time
from databricks_nats.transport.spool import SqliteSpool
directory, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    pass
try:
    spool = SqliteSpool(directory, 1 << 30)
    ids = [r.id for r in spool.load(0, 10 ** 6)]
    print(json.dumps({"ids": ids, "durable": True}), flush=True)
    time.sleep(max(0.0, start + 4 - time.time()))  # alive (locked) until every adopter is done
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
"""


@pytest.mark.slow
def test_processes_starting_together_adopt_every_dead_spool_exactly_once(tmp_path: Path) -> None:
    """Issue 13 item 4: three processes start at once over twelve dead spools, five rounds.

    No process fails (FileNotFoundError on a lock another removed), and every dead event is adopted by
    exactly one of them.
    """
    for rnd in range(5):
        directory = tmp_path / f"round{rnd}"
        expected = []
        for k in range(12):
            dead_spool(directory, f"r{rnd}s{k}", rows=2, per_row=20)
            expected += [f"r{rnd}s{k}-{n}" for n in range(1, 41)]
        start = time.time() + 1.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _ADOPTER, str(directory), str(start)], stdout=subprocess.PIPE, text=True
            )
            for _ in range(3)
        ]
        reports = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
        assert not [r["error"] for r in reports if "error" in r]
        adopted = [i for r in reports for i in r["ids"]]
        assert sorted(adopted) == sorted(expected), f"round {rnd}: {len(adopted)} adopted of {len(expected)}"


# ---- item 5: a live process adopts a dead peer's spool -----------------------------------------------------


@pytest.mark.slow
def test_a_live_publisher_adopts_a_dead_peers_spool_without_a_new_process(
    nats_server: Any, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13 item 5: a peer dies after this publisher started; its events are delivered by this one."""
    from databricks_nats.testing import read_stream

    monkeypatch.setattr(storage, "_ADOPT_EVERY", 0.3, raising=False)
    settings = make_settings(nats_server)
    pub = _api.build_transport(settings)
    try:
        assert pub.flush(10).ok
        subject = f"dbx.{settings.workspace}.{settings.env}.mlflow.run.metrics.a"
        dead_spool(Path(settings.spool_path), "peer", rows=4, per_row=25, subject=subject)
        deadline = time.monotonic() + 30
        while pub.stats()["replayed"] < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pub.stats()["replayed"] == 100
        assert pub.flush(20).ok
    finally:
        pub.close()
    stored = [m["envelope"]["id"] for m in read_stream(nats_server.url, settings.stream_name)]
    assert sorted(stored) == sorted(f"peer-{n}" for n in range(1, 101))
    assert not glob.glob(os.path.join(settings.spool_path, "spool-*"))


@pytest.mark.slow
def test_flush_is_not_ok_when_events_it_waited_for_were_dropped(fresh_server: Any, make_settings: Any) -> None:
    """Issue 13 item 2: ``flush()`` is ok only when every event emitted before it was acknowledged.

    Events dropped by the spool's bound while NATS is down make the next flush not ok (once); the flush
    after it, over events that were all acknowledged, is ok again.
    """
    fresh_server.stop()
    settings = make_settings(fresh_server, spool_max_bytes=20_000, connect_timeout=0.2, memory_max_events=10)
    pub = _api.build_transport(settings)
    try:
        data = {"experiment_id": "1", "run_id": "r", "metrics": {"m": 1.0}, "points": 1, "final": False}
        for _ in range(300):
            pub.emit(new_event("mlflow.run.metrics", data))
        deadline = time.monotonic() + 10
        while not pub.stats()["dropped"].get("spool_full") and time.monotonic() < deadline:
            time.sleep(0.02)
        fresh_server.start()
        first = pub.flush(30)
        assert pub.stats()["dropped"]["spool_full"] > 0
        assert not first.ok, first
        assert first.pending == 0
        pub.emit(new_event("mlflow.run.metrics", data))
        assert pub.flush(30).ok
    finally:
        pub.close()
