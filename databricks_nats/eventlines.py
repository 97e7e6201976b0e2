"""Events as terminal lines: what ``databricks-nats tail`` and the demo print, one event per line."""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from typing import IO, Any

__all__ = ["format_event", "print_events"]

_POINTERS = (
    "run_id", "name", "version", "alias", "model_id", "trace_id", "query_id", "batch_id", "table", "duration_ms",
    "publisher_id", "state",
)  # fmt: skip


def format_event(envelope: dict[str, Any], subject: str) -> str:
    """One readable line: time, type, subject and the event's main pointers."""
    data = envelope.get("data") or {}
    pointers = [f"{k}={data[k]}" for k in _POINTERS if data.get(k) not in (None, "")]
    if envelope.get("dataref"):
        pointers.append(f"ref={envelope['dataref']}")
    stamp = str(envelope.get("time", ""))[11:23]
    etype = str(envelope.get("type", "")).removeprefix("databricks.")
    return f"{stamp}  {etype:<28} {subject}  {' '.join(pointers)[:160]}"


def print_events(
    sub: Any,
    as_json: bool,
    limit: int | None,
    stop: threading.Event | None = None,
    seen: list[int] | None = None,
    out: IO[str] | None = None,
    counts: Counter[str] | None = None,
) -> int:
    """Print events from a subscription to ``out`` (stdout) until ``limit`` events or ``stop``; return how many.
    ``counts`` counts them per type."""
    seen = seen if seen is not None else [0]
    while (limit is None or seen[0] < limit) and not (stop is not None and stop.is_set()):
        try:
            event = sub.next(timeout=0.5 if stop is not None else None)
        except TimeoutError:
            continue
        line = json.dumps(event.envelope) if as_json else format_event(event.envelope, event.subject or "")
        print(line, file=out or sys.stdout, flush=True)
        if counts is not None:
            counts[event.type] += 1
        seen[0] += 1
    return seen[0]
