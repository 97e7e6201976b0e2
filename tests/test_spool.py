"""The SQLite spool on its own: burst rows, partial deletes, the size bound, and adoption of dead processes' files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from databricks_nats.transport.spool import Record, SqliteSpool


def _records(first: int, n: int, size: int = 100) -> list[Record]:
    return [
        Record(seq, f"id-{seq}", f"dbx.w.e.s.x.k{seq % 3}.a", b"{" + b"x" * (size - 2) + b"}")
        for seq in range(first, first + n)
    ]


def _rows(spool: SqliteSpool) -> int:
    assert spool.path is not None
    with sqlite3.connect(spool.path) as db:
        return int(db.execute("SELECT COUNT(*) FROM bursts").fetchone()[0])


def test_a_burst_is_one_row_until_its_last_event_is_deleted(tmp_path: Path) -> None:
    """Each append is one row; deleting events is bookkeeping until a row has none left."""
    spool = SqliteSpool(str(tmp_path), 1 << 20)
    first, second = _records(1, 500), _records(501, 300)
    assert spool.append(first) == []
    assert spool.append(second) == []
    assert (spool.count(), spool.size_bytes, spool.min_seq(), spool.max_seq(), _rows(spool)) == (800, 80_000, 1, 800, 2)
    spool.delete([r.seq for r in first[:499]] + [r.seq for r in second[:10]])
    assert (spool.count(), spool.min_seq(), _rows(spool)) == (291, 500, 2)
    assert spool.load(0, 3) == [first[499], second[10], second[11]]
    assert spool.load(600, 1000) == second[100:]
    spool.delete([500, 500, 12345])  # repeated and unknown sequences are ignored
    assert (spool.count(), spool.min_seq(), _rows(spool), spool.size_bytes) == (290, 511, 1, 30_000)
    spool.delete([r.seq for r in second])
    assert (spool.count(), spool.min_seq(), _rows(spool), spool.size_bytes) == (0, None, 0, 0)
    spool.close()
    assert not os.listdir(tmp_path)  # an empty spool leaves no file behind


def test_rows_with_gaps_and_deletes_in_any_order_keep_the_index_exact(tmp_path: Path) -> None:
    """Sequences missing from a row, deletes out of order and hundreds of removed rows never confuse the index."""
    spool = SqliteSpool(str(tmp_path), 1 << 24)
    gapped = [r for r in _records(1, 20) if r.seq % 2]  # 1, 3, ..., 19: the even ones were acked in memory
    spool.append(gapped)
    singles = [_records(seq, 1) for seq in range(21, 521)]  # a slow loop in an outage: one event per row
    for one in singles:
        spool.append(one)
    spool.delete([2, 4, 600])  # never stored here: ignored
    assert spool.count() == 510
    spool.delete(list(range(520, 20, -1)))  # newest first, row by row
    assert (spool.count(), spool.min_seq(), _rows(spool)) == (10, 1, 1)
    spool.delete([19, 1, 7])
    assert spool.load(0, 100) == [r for r in gapped if r.seq not in (1, 7, 19)]
    assert (spool.count(), spool.min_seq()) == (7, 3)
    spool.append(_records(600, 2))
    assert spool.load(17, 100) == _records(600, 2)
    spool.close()


def test_the_bound_drops_the_oldest_rows_then_the_oldest_events_of_the_new_burst(tmp_path: Path) -> None:
    """Over ``max_bytes`` the oldest rows go first; a burst larger than the bound keeps its newest events."""
    spool = SqliteSpool(str(tmp_path), 10_000)
    assert spool.append(_records(1, 60)) == []
    assert spool.append(_records(61, 60)) == list(range(1, 61))  # 12,000 bytes: the older row goes
    assert spool.append(_records(121, 150)) == list(range(61, 171))  # the new burst alone is 15,000 bytes
    assert [r.seq for r in spool.load(0, 1000)] == list(range(171, 271))
    assert spool.size_bytes == 10_000
    spool.close()


_DIE = r"""
import os, sys
from databricks_nats.transport.spool import Record, SqliteSpool
spool = SqliteSpool(sys.argv[1], 1 << 20)
spool.append([Record(s, f"id-{s}", "dbx.w.e.s.x.a", b'{"n":%d}' % s) for s in range(1, 101)])
spool.append([Record(s, f"id-{s}", "dbx.w.e.s.x.a", b'{"n":%d}' % s) for s in range(101, 151)])
spool.delete(list(range(101, 151)) + list(range(1, 41)))  # the second row is gone, the first partly acked
os._exit(0)  # like a killed process: no close
"""


def test_a_dead_process_spool_is_adopted_with_its_partly_acknowledged_rows(tmp_path: Path) -> None:
    """A new spool adopts a dead process's rows, renumbered, ids kept; a partly acknowledged row comes whole.

    The events of it that were acknowledged are published again: JetStream drops them by their Nats-Msg-Id.
    """
    subprocess.run([sys.executable, "-c", _DIE, str(tmp_path)], check=True)
    spool = SqliteSpool(str(tmp_path), 1 << 20)
    assert spool.adopted == 100
    records = spool.load(0, 1000)
    assert [r.id for r in records] == [f"id-{s}" for s in range(1, 101)]
    assert [r.seq for r in records] == list(range(1, 101))
    assert records[0].payload == b'{"n":1}'
    assert spool.path is not None
    own = Path(spool.path).stem
    assert all(name.startswith(own) for name in os.listdir(tmp_path))  # the dead one's files are gone
    spool.close()


def test_a_spool_file_of_the_one_row_per_event_layout_is_adopted(tmp_path: Path) -> None:
    """Spool files written by earlier versions (table ``events``, one row per event) are still replayed."""
    with sqlite3.connect(tmp_path / "spool-1-old.db") as db:
        db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, subject TEXT, payload BLOB)")
        db.executemany(
            "INSERT INTO events (id, subject, payload) VALUES (?, ?, ?)",
            [(f"old-{i}", "dbx.w.e.s.x.a", b"{}") for i in range(5)],
        )
    (tmp_path / "spool-1-old.lock").touch()
    spool = SqliteSpool(str(tmp_path), 1 << 20)
    assert spool.adopted == 5
    assert [r.id for r in spool.load(0, 10)] == [f"old-{i}" for i in range(5)]
    assert not (tmp_path / "spool-1-old.db").exists()
    spool.close()
