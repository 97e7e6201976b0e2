"""Strict RFC 8259 JSON for event data, and trimming of data that exceeds the event size cap.

Non-finite floats are encoded the way the protobuf JSON mapping does it: the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` (event schemas accept these where a metric value is expected).
Values JSON cannot hold are converted (see ``snapshot``): numpy and pandas values, Decimal, UUID, paths,
enums, dataclasses and pydantic models become their JSON equivalents; datetimes ISO 8601, bytes
``<N bytes>``, anything else its ``str()`` (bounded).

``snapshot`` is what ``emit()`` does in the caller's thread: a copy of the caller's data that later changes
to it cannot reach, made of JSON types only, and bounded by the size cap.

Trimming keeps the event and its pointers: strings are cut (ending with ``…``), lists and maps keep
their first items, and the data gains ``truncated: true`` and ``truncated_fields`` mapping each cut path
to its original length. An event is never dropped or rejected for its size.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import itertools
import json
import math
import sys
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from databricks_nats.errors import DatabricksNatsError

__all__ = ["ENCODER", "dumps", "encode_compact", "sanitize", "snapshot", "trim_to_fit"]

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
    return sanitize(_convert(value, "", _UNBOUNDED, {}, _depth), _depth + 1)


# ---- snapshot: the caller's data captured at emit ---------------------------------------------------------

_PLAIN = frozenset({str, int, float, bool, type(None)})  # immutable: shared by a snapshot, never copied
_KEEP = 256  # items kept of a list or map cut at emit: what trim_to_fit's first level keeps
_DEPTH = 32
_UNBOUNDED = sys.maxsize


class _Slow(DatabricksNatsError):
    """The fast copy met something it does not handle: a cut, a non-string key, a non-JSON value."""


def snapshot(data: Mapping[str, Any] | None, max_bytes: int = 8192, etype: Any = None) -> dict[str, Any]:
    """A copy of ``data`` made only of JSON types, taken now: what ``emit()`` publishes, whatever the caller
    does to ``data`` afterwards.

    Dicts, lists and tuples are copied (tuples, sets and sequences become lists); ``str``/``int``/``float``/
    ``bool``/``None`` are immutable and shared, so plain data costs one dict/list per container. Other values
    are converted at once: numpy scalars and arrays (``tolist``), pandas ``Timestamp`` (ISO 8601), ``NA``/``NaT``
    (null), ``Series``/``Index`` (a list, or a map for a labelled series), ``DataFrame`` (records), Decimal (a
    number), UUID and paths (strings), enums (their value), dataclasses and pydantic models (their fields),
    datetimes (ISO 8601), bytes (``<N bytes>``), anything else its ``str()`` (bounded). numpy, pandas and
    pydantic are never imported here: a value is theirs when its type's module says so.

    Bounded by the size cap: a list or map with more items than ``max_bytes // 2`` cannot fit (each item costs
    at least two bytes), so only its first 256 are copied, as trimming would keep, and the data is marked as
    trimmed data is (``truncated: true``, ``truncated_fields`` {path: original length}). Strings are shared
    whatever their length; the encoder cuts them. Non-finite floats are kept; the encoder writes them as
    ``"NaN"``/``"Infinity"``. ``etype``: the event type, whose keys and pointer survive a cut of the top level.
    """
    limit = max_bytes >> 1 if max_bytes > 2 * _KEEP else _KEEP
    if type(data) is dict and len(data) <= limit:  # the usual case, the top level of _fast inlined
        out = {}
        plain = _PLAIN
        try:
            for k, v in data.items():
                if type(k) is not str:
                    raise _Slow
                out[k] = v if type(v) in plain else _fast(v, limit, 1)
            return out
        except (_Slow, RuntimeError):  # RuntimeError: another thread changed the data while it was copied
            pass
    if not data:
        return {}
    for attempt in range(3):
        try:
            return _slow_top(data, limit, etype)
        except RuntimeError:  # "dictionary changed size during iteration": copy again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _fast(value: Any, limit: int, depth: int) -> Any:
    """Copy plain JSON containers (string keys, plain scalars); raise _Slow for anything else."""
    t = type(value)
    if depth > _DEPTH:
        raise _Slow
    plain = _PLAIN
    if t is dict:
        if len(value) > limit:
            raise _Slow
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _Slow
            out[k] = v if type(v) in plain else _fast(v, limit, depth + 1)
        return out
    if t is list or t is tuple:
        if len(value) > limit:
            raise _Slow
        return [v if type(v) in plain else _fast(v, limit, depth + 1) for v in value]
    raise _Slow


def _slow_top(data: Mapping[str, Any], limit: int, etype: Any) -> dict[str, Any]:
    cut: dict[str, int] = {}
    items: Any = data.items()
    if len(data) > limit:  # the protected fields, then the first fields: as trim_to_fit's first level
        protected = etype.protected if etype is not None else frozenset()
        cut["<fields>"] = len(data)
        items = [(k, v) for k, v in items if _key(k) in protected] + [
            (k, v) for k, v in itertools.islice(items, _KEEP * 4) if _key(k) not in protected
        ]
    out: dict[str, Any] = {}
    for k, v in items:
        key = _key(k)
        out[key] = _convert(v, key, limit, cut, 1)
    if cut:
        prior = out.get("truncated_fields") if out.get("truncated") is True else None
        merged = dict(prior) if isinstance(prior, dict) else {}
        for path, n in cut.items():
            merged.setdefault(path, n)
        out["truncated"] = True
        out["truncated_fields"] = dict(list(merged.items())[:16])
    return out


def _key(k: Any) -> str:
    """A map key as JSON writes it: strings as they are, null/true/false, numbers in JSON form; else str()."""
    if type(k) is str:
        return k
    if isinstance(k, str):  # str subclasses and str-valued enums: the characters
        return str.__str__(k)
    if isinstance(k, (tuple, frozenset)):
        return str(k)[:_MAX_STR_REPR]
    c = _convert(k, "", 0, {}, _DEPTH + 1)
    if c is None or isinstance(c, bool):
        return json.dumps(c)
    if isinstance(c, float):
        c = _float(c)
    return c if isinstance(c, str) else str(c)


def _items(value: Any, path: str, limit: int, cut: dict[str, int]) -> Any:
    """The items of a sized collection, the first _KEEP only (the cut recorded) when there are too many."""
    n = len(value)
    if n > limit:
        cut[path] = n
        return itertools.islice(value, _KEEP)
    return value


def _convert(value: Any, path: str, limit: int, cut: dict[str, int], depth: int) -> Any:
    """``value`` as JSON types; lists and maps beyond ``limit`` items cut (recorded in ``cut`` by path)."""
    t = type(value)
    if t in _PLAIN:
        return value
    if depth > _DEPTH and isinstance(value, (dict, list, tuple, set, frozenset, deque, Mapping)):
        return "<nested too deep>"
    try:
        if isinstance(value, dict):
            return _map(value.items(), len(value), path, limit, cut, depth)
        if isinstance(value, (list, tuple, set, frozenset, deque)):
            return [
                _convert(v, f"{path}[{i}]", limit, cut, depth + 1)
                for i, v in enumerate(_items(value, path, limit, cut))
            ]
        if isinstance(value, enum.Enum):
            return _convert(value.value, path, limit, cut, depth + 1)
        if isinstance(value, str):  # str subclasses (numpy.str_ among them)
            return str.__str__(value)
        if isinstance(value, int):  # int subclasses (bool is final)
            return int.__index__(value)
        if isinstance(value, float):  # numpy.float64 among them
            return float.__float__(value)
        module = t.__module__
        if module == "numpy" or module.startswith("numpy."):
            return _numpy(value, path, limit, cut, depth)
        if module.startswith("pandas"):
            return _pandas(value, path, limit, cut, depth)
        if "pydantic" in sys.modules and _is_pydantic(t):
            dumped = value.model_dump(mode="json") if hasattr(value, "model_dump") else value.dict()
            return _convert(dumped, path, limit, cut, depth + 1)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
            return _map(fields, len(fields), path, limit, cut, depth)
        if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
            return value.isoformat()
        if isinstance(value, (bytes, bytearray, memoryview)):
            return f"<{len(value)} bytes>"
        if isinstance(value, (uuid.UUID, PurePath)):
            return str(value)
        if isinstance(value, Decimal):  # a number; NaN and ±Infinity as the encoder writes non-finite floats
            return math.nan if value.is_nan() else float(value)
        if isinstance(value, Mapping):
            return _map(value.items(), len(value), path, limit, cut, depth)
        if hasattr(value, "__index__"):  # integer-like (other array libraries' integer scalars)
            return int(value.__index__())
        if hasattr(value, "__float__"):  # float-like
            return float(value)
    except Exception:  # noqa: BLE001, S110 - a value that will not convert is shown as a string below
        pass
    try:
        return str(value)[:_MAX_STR_REPR]
    except Exception:  # noqa: BLE001 - its str() raises: its type is all we can show
        return f"<{t.__name__}>"


def _map(items: Any, n: int, path: str, limit: int, cut: dict[str, int], depth: int) -> dict[str, Any]:
    if n > limit:
        cut[path] = n
        items = itertools.islice(items, _KEEP)
    out: dict[str, Any] = {}
    for k, v in items:
        key = _key(k)
        out[key] = _convert(v, f"{path}.{key}" if path else key, limit, cut, depth + 1)
    return out


def _is_pydantic(t: type) -> bool:
    return any(c.__module__.startswith("pydantic") for c in t.__mro__[1:])


def _numpy(value: Any, path: str, limit: int, cut: dict[str, int], depth: int) -> Any:
    np = sys.modules["numpy"]  # the value is numpy's, so numpy is imported
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _convert(value[()], path, limit, cut, depth)  # a 0-d array: its one value
        if depth > _DEPTH:
            return "<nested too deep>"
        n = value.shape[0]
        if n > limit:
            cut[path] = n
            value = value[:_KEEP]
        if value.ndim == 1 and (value.dtype.kind in "biuf" or isinstance(value, np.ma.MaskedArray)):
            return value.tolist()  # Python bools, ints and floats (masked values: None) in one C call
        return [_convert(v, f"{path}[{i}]", limit, cut, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else str(np.datetime_as_string(value))
    if isinstance(value, np.timedelta64):
        return None if np.isnat(value) else str(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.generic):  # complex, bytes, void…: the Python value, converted
        item = value.item()
        return str(item)[:_MAX_STR_REPR] if isinstance(item, np.generic) else _convert(item, path, limit, cut, depth)
    return str(value)[:_MAX_STR_REPR]


def _pandas(value: Any, path: str, limit: int, cut: dict[str, int], depth: int) -> Any:
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    pd = sys.modules["pandas"]  # the value is pandas', so pandas is imported
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, pd.Timedelta):
        return str(value)
    if depth > _DEPTH:
        return "<nested too deep>"
    if isinstance(value, pd.DataFrame):
        n = len(value)
        if n > limit:
            cut[path] = n
            value = value.iloc[:_KEEP]
        return _convert(value.to_dict(orient="records"), path, limit, cut, depth)
    if isinstance(value, pd.Series):
        n = len(value)
        if n > limit:
            cut[path] = n
            value = value.iloc[:_KEEP]
        if isinstance(value.index, pd.RangeIndex):
            return _convert(value.tolist(), path, limit, cut, depth)
        return _map(zip(value.index.tolist(), value.tolist(), strict=True), len(value), path, limit, cut, depth)
    if isinstance(value, (pd.Index, pd.Categorical)) or hasattr(value, "tolist"):
        n = len(value)
        if n > limit:
            cut[path] = n
            value = value[:_KEEP]
        return _convert(value.tolist(), path, limit, cut, depth)
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
    """Cut ``value`` to these limits, recording each cut path's original length (a length already recorded
    at emit, before a snapshot cut, is kept)."""
    if isinstance(value, str):
        if len(value) > max_str:
            cut.setdefault(path, len(value))
            return value[: max_str - 1] + "…"
        return value
    if isinstance(value, dict):
        items = list(value.items())
        if len(items) > max_items:
            cut.setdefault(path, len(items))
            items = items[:max_items]
        return {k: _cut(v, f"{path}.{k}" if path else k, max_str, max_items, cut) for k, v in items}
    if isinstance(value, list):
        if len(value) > max_items:
            cut.setdefault(path, len(value))
            value = value[:max_items]
        return [_cut(v, f"{path}[{i}]", max_str, max_items, cut) for i, v in enumerate(value)]
    return value


def trim_to_fit(data: dict[str, Any], fits: Any, protected: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Return the least-trimmed version of sanitised ``data`` for which ``fits(data)`` is true.

    ``protected`` top-level keys (the pointers and the context) are trimmed only at the last resort. Data
    already marked truncated (cut by ``snapshot`` at emit) keeps its recorded original lengths.
    """
    top = [(k, v) for k, v in data.items() if k not in ("truncated", "truncated_fields")]
    prior = data.get("truncated_fields") if data.get("truncated") is True else None
    prior = {k: n for k, n in prior.items() if isinstance(k, str)} if isinstance(prior, dict) else {}
    for max_str, max_items in _LEVELS:
        cut: dict[str, int] = dict(prior)
        kept = [(k, v) for k, v in top if k in protected]
        rest = [(k, v) for k, v in top if k not in protected]
        if len(rest) > max_items * 4:
            cut.setdefault("<fields>", len(top))
            rest = rest[: max_items * 4]
        out = {k: v if k in protected else _cut(v, k, max_str, max_items, cut) for k, v in kept + rest}
        out["truncated"] = True
        out["truncated_fields"] = dict(list(cut.items())[:16])
        if fits(out):
            return out
    # Last resort: the protected fields (pointers and keys, shortened), then short scalars while they fit.
    keep: dict[str, Any] = {k: _short(v) for k, v in top if k in protected}
    keep["truncated"] = True
    keep["truncated_fields"] = {"<fields>": prior.get("<fields>", len(top))}
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
