"""The row codec: a burst of events as one row body (a JSON index, then the payloads), zlib or CRC-32 checked.

``unpack`` reads our own rows; ``unpack_untrusted`` checks every field of a row from a file we did not
just write (an adopted file) and raises ``ValueError`` when one is wrong.
"""

from __future__ import annotations

import itertools
import json
import zlib
from typing import Any

from databricks_nats.transport.spool.base import Record

__all__ = ["pack", "unpack", "unpack_untrusted"]

_new = tuple.__new__  # Record(*fields) without the Python-level __new__ of a NamedTuple


_RAW = b"\0"  # first byte of a row stored uncompressed (a zlib stream never starts with it), then its CRC-32
_COMPRESS_FROM = 4096  # bytes: smaller rows (one event in immediate mode) skip zlib's ~20 us set-up


def pack(records: list[Record]) -> bytes:
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


def unpack(body: bytes) -> list[Record]:
    head, _, blob = _body(body).partition(b"\n")
    seqs, ids, subjects, sizes = json.loads(head)
    ends = list(itertools.accumulate(size + 1 for size in sizes))
    payloads = [blob[end - size - 1 : end - 1] for size, end in zip(sizes, ends, strict=True)]
    return [_new(Record, fields) for fields in zip(seqs, ids, subjects, payloads, strict=True)]


def unpack_untrusted(body: Any, n: Any) -> list[Record]:
    """``unpack`` for a row of a file we did not just write: every field checked; ValueError when wrong."""
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
    return unpack(body)
