"""Time-ordered, unique event ids (UUIDv7, RFC 9562) that stay monotonic within one process."""

from __future__ import annotations

import random
import threading
import time

__all__ = ["uuid7", "uuid7_time_ms"]

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
