"""Strict RFC 8259 JSON for event data, and trimming of data that exceeds the event size cap.

Non-finite floats are encoded the way the protobuf JSON mapping does it: the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` (event schemas accept these where a metric value is expected).
Values JSON cannot hold become strings: datetimes as ISO 8601, bytes as ``<N bytes>``, anything else
as its ``str()`` (bounded).

Trimming keeps the event and its pointers: strings are cut (ending with ``…``), lists and maps keep
their first items, and the data gains ``truncated: true`` and ``truncated_fields`` mapping each cut path
to its original length. An event is never dropped or rejected for its size.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable
from typing import Any

__all__ = ["ENCODER", "dumps", "encode_compact", "sanitize", "trim_to_fit"]

_NONFINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}
_MAX_STR_REPR = 1024


def _float(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else _NONFINITE[x]


def sanitize(value: Any, _depth: int = 0) -> Any:
    """Return a copy of ``value`` made only of JSON types, with non-finite floats as strings."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return _float(value)
    if _depth > 32:
        return "<nested too deep>"
    if isinstance(value, dict):
        return {str(k): sanitize(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [sanitize(v, _depth + 1) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if hasattr(value, "__index__"):  # numpy integers
        return int(value.__index__())
    if hasattr(value, "__float__"):  # numpy floats, Decimal
        try:
            return _float(float(value))
        except (TypeError, ValueError):
            pass
    return str(value)[:_MAX_STR_REPR]


ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _compact() -> Callable[[Any], str]:
    """``ENCODER.encode`` without its per-call set-up: the C encoder, built once (when there is one).

    Same output and errors, except that a circular structure raises RecursionError instead of ValueError.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return ENCODER.encode
    encoder = make(None, ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    join = "".join
    return lambda value: join(encoder(value, 0))


encode_compact = _compact()


def dumps(value: Any) -> bytes:
    """Serialise to compact, strict JSON bytes (sanitising only when the fast path refuses)."""
    try:
        return ENCODER.encode(value).encode()
    except (ValueError, TypeError, RecursionError):
        # Lone surrogates (undecodable file names) cannot be UTF-8: they become U+FFFD's stand-in "?".
        return ENCODER.encode(sanitize(value)).encode("utf-8", "replace")


# Harsher and harsher limits: (max string length, max items per list or map).
_LEVELS = ((2048, 256), (512, 64), (128, 16), (64, 4), (32, 1))


def _cut(value: Any, path: str, max_str: int, max_items: int, cut: dict[str, int]) -> Any:
    if isinstance(value, str):
        if len(value) > max_str:
            cut[path] = len(value)
            return value[: max_str - 1] + "…"
        return value
    if isinstance(value, dict):
        items = list(value.items())
        if len(items) > max_items:
            cut[path] = len(items)
            items = items[:max_items]
        return {k: _cut(v, f"{path}.{k}" if path else k, max_str, max_items, cut) for k, v in items}
    if isinstance(value, list):
        if len(value) > max_items:
            cut[path] = len(value)
            value = value[:max_items]
        return [_cut(v, f"{path}[{i}]", max_str, max_items, cut) for i, v in enumerate(value)]
    return value


def trim_to_fit(data: dict[str, Any], fits: Any, protected: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Return the least-trimmed version of sanitised ``data`` for which ``fits(data)`` is true.

    ``protected`` top-level keys (the pointers and the context) are trimmed only at the last resort.
    """
    top = [(k, v) for k, v in data.items() if k not in ("truncated", "truncated_fields")]
    for max_str, max_items in _LEVELS:
        cut: dict[str, int] = {}
        kept = [(k, v) for k, v in top if k in protected]
        rest = [(k, v) for k, v in top if k not in protected]
        if len(rest) > max_items * 4:
            cut["<fields>"] = len(top)
            rest = rest[: max_items * 4]
        out = {k: v if k in protected else _cut(v, k, max_str, max_items, cut) for k, v in kept + rest}
        out["truncated"] = True
        out["truncated_fields"] = dict(list(cut.items())[:16])
        if fits(out):
            return out
    # Last resort: the protected fields (pointers and keys, shortened), then short scalars while they fit.
    keep: dict[str, Any] = {k: _short(v) for k, v in top if k in protected}
    keep["truncated"] = True
    keep["truncated_fields"] = {"<fields>": len(top)}
    for k, v in top:
        if k in protected or not (v is None or isinstance(v, (bool, int, float, str))):
            continue
        keep[k] = _short(v)
        if not fits(keep):
            del keep[k]
            break
    if not fits(keep):  # even the pointers are too long: cut them harder
        keep = {k: (v[:32] if isinstance(v, str) else v) for k, v in keep.items()}
    return keep


def _short(v: Any) -> Any:
    return v[:255] + "…" if isinstance(v, str) and len(v) > 256 else v
