"""Filters a trigger stores as JSON: equality on data fields (``match``) and comparisons (``where``).

Both name fields of the event's ``data`` with ``__`` between nesting levels (``metrics__rmse__value``),
as ``databricks_nats.subscribe(match=...)`` does. No Airflow import here.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from databricks_nats.errors import ConfigurationError
from databricks_nats.model.filters import matches

__all__ = ["OPERATORS", "accepts", "normalize_where"]

_MISSING = object()


def _number(value: Any) -> Any:
    """Numbers compare as numbers; the JSON strings "NaN"/"Infinity"/"-Infinity" are the floats they stand for."""
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    return value


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def check(have: Any, want: Any) -> bool:
        have, want = _number(have), _number(want)
        if isinstance(have, bool) or isinstance(want, bool):
            return False
        if isinstance(have, (int, float)) and isinstance(want, (int, float)):
            return not (isinstance(have, float) and math.isnan(have)) and op(have, want)
        if isinstance(have, str) and isinstance(want, str):
            return op(have, want)
        return False

    return check


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda have, want: have == want,
    "!=": lambda have, want: have != want,
    "<": _compare(operator.lt),
    "<=": _compare(operator.le),
    ">": _compare(operator.gt),
    ">=": _compare(operator.ge),
    "in": lambda have, want: have in want,
    "not in": lambda have, want: have not in want,
    "exists": lambda have, want: (have is not _MISSING) == bool(want),
}


def normalize_where(where: Any) -> list[list[Any]]:
    """``[[field, op, value], ...]`` (JSON-serialisable), checked; a single triple may be given bare."""
    if where is None:
        return []
    if isinstance(where, Sequence) and len(where) == 3 and isinstance(where[0], str) and where[1] in OPERATORS:
        where = [where]
    out = []
    for cond in where:
        if not isinstance(cond, Sequence) or isinstance(cond, str) or len(cond) != 3:
            raise ConfigurationError("where", f"a where condition is [field, operator, value], not {cond!r}")
        field, op, value = cond
        if not isinstance(field, str) or not field:
            raise ConfigurationError("where", f"a where condition names a data field, not {field!r}")
        if op not in OPERATORS:
            raise ConfigurationError("where", f"unknown operator {op!r} in {cond!r}; known: {', '.join(OPERATORS)}")
        if op in ("in", "not in"):
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ConfigurationError("where", f"{op!r} needs a list of values, not {value!r}")
            value = list(value)
        out.append([field, op, value])
    return out


def _field(data: Any, name: str) -> Any:
    have: Any = data
    for part in name.split("__"):
        if not isinstance(have, Mapping) or part not in have:
            return _MISSING
        have = have[part]
    return have


def accepts(data: Mapping[str, Any], match: Mapping[str, Any] | None, where: Sequence[Sequence[Any]]) -> bool:
    """True when ``data`` has every ``match`` field value and satisfies every ``where`` condition."""
    if match and not matches(data, match):
        return False
    for field, op, want in where:
        have = _field(data, field)
        if op == "exists":
            if not OPERATORS[op](have, want):
                return False
        elif have is _MISSING or not OPERATORS[op](have, want):
            return False
    return True
