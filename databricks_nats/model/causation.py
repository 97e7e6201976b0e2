"""Causation: which event caused which, so a chain of reactions can be followed and a loop cut.

Every event emitted while another one is being handled carries four CloudEvents extension attributes:

- ``causationid`` — the id of the event that caused it;
- ``correlationid`` — shared by the whole chain: the id of the event that started it;
- ``hop`` — how many reactions deep it is (1 for an event caused by an original event);
- ``via`` — the targets the chain went through, in order (``airflow:dag/train``, ``prefect:deployment/d``,
  ``subscribe:<durable>``), comma-separated and percent-encoded.

"While handling" is a context (``caused_by(envelope, target)``, a ``contextvars`` variable, so threads and
asyncio tasks each have their own): ``subscribe``'s loop body, a DAG run the Airflow trigger started, a flow run
the Prefect bridge started. A loop body is not a ``with`` block: the loop leaves it by asking for the next event,
but also by ``break`` or an exception, after which nothing of the loop runs again (an abandoned async generator is
closed later, in another task). So a loop marks its event current with a ``Scope``, which it ends when it moves on
or is dropped; ``current()`` skips a scope that has ended, whatever the variable still holds. An event can also be
given its causation explicitly (``Causation.from_envelope``).

A reactor (a bridge, a trigger, a subscription) asks ``loop_reason(envelope, target, limit)`` before it acts:
an event whose hop is at the limit, or whose chain already went through this very target, is refused — the
caller counts it, logs it once and publishes ``system.loop.detected``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

__all__ = ["HOP_LIMIT", "Causation", "Scope", "caused_by", "current", "loop_reason"]

HOP_LIMIT = 8  # the default: a chain this deep is assumed to be a loop

_MAX_VIA = 32  # targets kept in ``via`` (the oldest are dropped beyond: the chain is cut long before)


def _via(text: Any) -> tuple[str, ...]:
    if not isinstance(text, str) or not text:
        return ()
    return tuple(unquote(part) for part in text.split(",") if part)


def _hop(value: Any) -> int:
    try:
        hop = int(value)
    except (TypeError, ValueError):
        return 0
    return max(hop, 0)


@dataclass(frozen=True)
class Causation:
    """The causation attributes an event carries (see the module docstring)."""

    causation_id: str
    correlation_id: str
    hop: int
    via: tuple[str, ...] = ()

    @classmethod
    def of(cls, envelope: Mapping[str, Any]) -> Causation | None:
        """What a received envelope itself carries, or None for an original event (no ``causationid``)."""
        cause = envelope.get("causationid")
        if not isinstance(cause, str) or not cause:
            return None
        correlation = envelope.get("correlationid")
        return cls(
            cause,
            correlation if isinstance(correlation, str) and correlation else cause,
            _hop(envelope.get("hop")),
            _via(envelope.get("via")),
        )

    @classmethod
    def from_envelope(cls, envelope: Mapping[str, Any], target: str | None = None) -> Causation:
        """The causation of an event emitted in reaction to ``envelope`` (at ``target``)."""
        own = cls.of(envelope)
        event_id = str(envelope.get("id") or "")
        via = (own.via if own else ()) + ((target,) if target else ())
        return cls(
            causation_id=event_id,
            correlation_id=own.correlation_id if own else event_id,
            hop=(own.hop if own else 0) + 1,
            via=via[-_MAX_VIA:],
        )

    def attributes(self) -> dict[str, Any]:
        """The envelope's extension attributes."""
        out: dict[str, Any] = {"causationid": self.causation_id, "correlationid": self.correlation_id, "hop": self.hop}
        if self.via:
            out["via"] = ",".join(quote(t, safe="/:@") for t in self.via)
        return out


class Scope:
    """``cause`` is current from here until ``end()`` (a loop body's event); ``end`` is idempotent."""

    __slots__ = ("_token", "cause", "done", "outer")

    def __init__(self, cause: Causation) -> None:
        self.cause, self.done = cause, False
        self.outer = _current.get()  # what is current again once this scope ended
        self._token = _current.set(self)

    def end(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(ValueError):  # ended from another context: current() skips it anyway
            _current.reset(self._token)


_current: contextvars.ContextVar[Causation | Scope | None] = contextvars.ContextVar(
    "databricks_nats_causation", default=None
)


def current() -> Causation | None:
    """The causation of events emitted now (inside ``caused_by`` or a loop body's ``Scope``), or None."""
    value = _current.get()
    while isinstance(value, Scope):
        if not value.done:
            return value.cause
        value = value.outer
    return value


@contextlib.contextmanager
def caused_by(envelope: Mapping[str, Any] | Causation, target: str | None = None) -> Iterator[Causation]:
    """Events emitted inside the block are caused by ``envelope`` (reached through ``target``)."""
    cause = envelope if isinstance(envelope, Causation) else Causation.from_envelope(envelope, target)
    token = _current.set(cause)
    try:
        yield cause
    finally:
        with contextlib.suppress(ValueError):  # a generator's block closed from another context
            _current.reset(token)


def loop_reason(envelope: Mapping[str, Any], target: str | None, limit: int = HOP_LIMIT) -> str | None:
    """Why acting on ``envelope`` at ``target`` would continue a loop, or None when it is safe.

    Refused: the event is already ``limit`` hops deep (acting would make hop ``limit + 1``), or its chain already
    went through ``target``. A ``system.loop.detected`` report is never refused: monitors must see it.
    """
    own = Causation.of(envelope)
    if own is None:
        return None
    if str(envelope.get("type", "")).endswith("system.loop.detected"):
        return None  # a loop's report reaches every reader (it is announced once per chain, at hop limit + 1)
    if own.hop >= limit:
        return f"hop limit {limit} reached (the event is {own.hop} hops deep)"
    if target and target in own.via:
        return f"the chain already went through {target}"
    return None
