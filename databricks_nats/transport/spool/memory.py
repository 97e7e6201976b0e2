"""``MemorySpool``: the spool contract without durability, the fallback when the directory is not writable."""

from __future__ import annotations

import threading
from collections import OrderedDict

from databricks_nats.transport.spool.base import Record

__all__ = ["MemorySpool"]


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
