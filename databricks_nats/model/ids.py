"""Event ids: time-ordered and unique (UUIDv7, RFC 9562, monotonic within one process), or derived from a fact.

A derived id (UUIDv5) is the same wherever the same fact is seen: the MLflow hook and the webhook receiver
both announce "alias champion of model m now points at version 3" with one id, so the stream's
de-duplication (``Nats-Msg-Id``, within its duplicate window) stores it once.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

__all__ = ["derived_id", "uuid7", "uuid7_time_ms"]

_FACTS = uuid.UUID("3d2b7c1e-9f4a-5b6d-8e0f-1a2b3c4d5e6f")  # the namespace of derived ids

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def uuid7() -> str:
    """Return a new UUIDv7 string; ids made later in this process always sort after earlier ones."""
    global _last_ms, _seq
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(64)  # no system call per id; the random module reseeds itself in a forked child
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFF:  # 4096 ids in one millisecond: borrow the next millisecond
                ms += 1
                _seq = 0
        else:
            _seq = rand >> 52  # random start keeps ids unguessable across processes
            _seq &= 0x7FF
        _last_ms = ms
        seq = _seq
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_time_ms(event_id: str) -> int:
    """Return the Unix time in milliseconds embedded in a UUIDv7 string."""
    return int(event_id.replace("-", "")[:12], 16)


def derived_id(kind: str, *parts: object) -> str:
    """The fixed id (UUIDv5) of one fact: ``kind`` (an event type) and the values that identify it.

    ``None`` and ``""`` are the same part; parts are joined with a separator no MLflow name contains."""
    text = "\x1f".join([kind, *("" if p is None else str(p) for p in parts)])
    return str(uuid.uuid5(_FACTS, text))
