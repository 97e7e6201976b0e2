"""``StartPosition``: where reading a stream starts, parsed in one place.

Accepted everywhere a start (or an event-log bound) is given — ``subscribe``/``wait_for``, the Airflow
trigger and sensor, ``databricks-nats tail --since``, ``read_events(start=, end=)``:

* ``"new"`` — only events stored from now on; ``"all"`` — from the first stored event; ``"last"`` — from the
  last stored event;
* a stream sequence: an ``int``, a string of digits (``"42"``) or ``"seq:42"``;
* a time: a ``datetime`` (naive means UTC) or an ISO-8601 string (``"2026-01-02T03:04:05Z"``);
* a duration ago: a ``timedelta`` or ``"30s"``, ``"10m"``, ``"2h"``, ``"1d"`` (resolved to a time at parse).

Anything else raises ``ConfigurationError`` naming the parameter.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Literal, Union

from databricks_nats.errors import ConfigurationError

__all__ = ["Start", "StartPosition"]

Kind = Literal["new", "all", "last", "seq", "time"]
Start = Union[str, int, _dt.datetime, _dt.timedelta, "StartPosition"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd])")
_EXPECTED = (
    "'new', 'all', 'last', a stream sequence (N or 'seq:N'), a time (datetime or ISO 8601) "
    "or a duration ago ('10m', '2h', '1d')"
)


@dataclass(frozen=True)
class StartPosition:
    """One parsed start: ``kind`` and, for ``"seq"`` / ``"time"``, the sequence or the (UTC) time."""

    kind: Kind
    seq: int | None = None
    time: _dt.datetime | None = None

    @classmethod
    def parse(cls, value: Start, parameter: str = "start") -> StartPosition:
        """The position ``value`` names; ``ConfigurationError`` (naming ``parameter``) when it names none."""
        if isinstance(value, StartPosition):
            return value
        if isinstance(value, bool):
            raise _invalid(parameter, value)
        if isinstance(value, int):
            return cls("seq", seq=value)
        if isinstance(value, _dt.datetime):
            return cls.at(value)
        if isinstance(value, _dt.timedelta):
            return cls.at(_dt.datetime.now(_dt.timezone.utc) - value)
        if not isinstance(value, str):
            raise _invalid(parameter, value)
        text = value.strip()
        if text in ("new", "all", "last"):
            return cls(text)  # type: ignore[arg-type]  # narrowed by the membership test
        digits = text.removeprefix("seq:")
        if digits.isdigit() and digits.isascii():
            return cls("seq", seq=int(digits))
        duration = _DURATION.fullmatch(text)
        if duration:
            ago = _dt.timedelta(seconds=int(duration[1]) * _UNITS[duration[2]])
            return cls.at(_dt.datetime.now(_dt.timezone.utc) - ago)
        try:
            return cls.at(_dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            raise _invalid(parameter, value) from None

    @classmethod
    def at(cls, when: _dt.datetime) -> StartPosition:
        """The position of the first event stored at or after ``when`` (naive means UTC)."""
        when = when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)
        return cls("time", time=when.astimezone(_dt.timezone.utc))

    @property
    def stamp(self) -> str:
        """The time as the server wants it (RFC 3339, UTC, ``Z``); only for ``kind == "time"``."""
        assert self.time is not None
        return self.time.isoformat().replace("+00:00", "Z")

    def to_json(self) -> str | int:
        """A JSON value that ``parse`` reads back to this position (``"new"``, ``42``, an ISO time...)."""
        if self.seq is not None:
            return self.seq
        if self.time is not None:
            return self.time.isoformat()
        return self.kind


def _invalid(parameter: str, value: object) -> ConfigurationError:
    return ConfigurationError(parameter, f"must be {_EXPECTED}, not {value!r}")
