"""The monitor's numbers as plain data: samples over a sliding window, thresholds, and the snapshot they give.

No I/O here: ``collect`` feeds ``Window`` with what it reads from the stream and the JetStream API, and
``snapshot`` turns it into rows (rates and latency per source/type, publishers, durable consumers), each
``red`` with the reasons when a threshold is crossed. The view and ``--json`` print the same snapshot.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ConsumerRow",
    "PublisherRow",
    "RateRow",
    "Sample",
    "Snapshot",
    "Thresholds",
    "Window",
    "percentile",
    "short_source",
]

FORGET_AFTER_S = 3600.0  # a publisher silent for longer is gone (no longer listed), not stale
LATENCY = "system.latency.degraded"
HEALTH = "system.publisher.health"
STOPPED = "system.publisher.stopped"


@dataclass(frozen=True)
class Thresholds:
    """What turns a row red: ``None`` switches a check off."""

    max_p99_ms: float | None = None
    max_lag: int | None = None
    stale_after_s: float | None = None  # default: 3 x the publisher's own interval_s


@dataclass(frozen=True)
class Sample:
    """One stored event: when the stream stored it (epoch seconds) and its publish-to-stream latency."""

    stored: float
    source: str
    type: str
    latency_ms: float


def percentile(values: list[float], p: float) -> float | None:
    """The ``p`` quantile (0..1) of ``values`` (nearest rank), rounded to 0.1 ms; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)


def short_source(source: str) -> str:
    """``/databricks/<workspace>/<env>/mlflow`` → ``mlflow``: the namespace is the same on every row."""
    parts = source.strip("/").split("/")
    return parts[3] if len(parts) >= 4 and parts[0] == "databricks" else source


@dataclass
class RateRow:
    source: str
    type: str
    events: int
    per_s: float
    p50_ms: float | None
    p99_ms: float | None
    red: bool = False
    why: list[str] = field(default_factory=list)


@dataclass
class PublisherRow:
    publisher_id: str
    state: str  # the heartbeat's state, "stopped" after system.publisher.stopped
    age_s: float  # since its latest heartbeat was stored
    interval_s: float | None
    stale: bool
    queue_depth: int | None
    spool_bytes: int | None
    oldest_unacked_age_s: float | None
    acked: int | None
    dropped: int | None
    reason: str | None = None  # why it stopped
    compute: dict[str, Any] = field(default_factory=dict)
    red: bool = False
    why: list[str] = field(default_factory=list)


@dataclass
class ConsumerRow:
    name: str
    filter: str
    pending: int  # stored but not yet delivered
    ack_pending: int  # delivered, not yet acknowledged
    redelivered: int
    lag: int  # pending + ack_pending: events the consumer has not finished
    red: bool = False
    why: list[str] = field(default_factory=list)


@dataclass
class Snapshot:
    """Everything the monitor shows at one moment; ``red`` when any row is."""

    stream: str
    namespace: str
    window_s: float
    at: float
    events: int
    per_s: float
    p50_ms: float | None
    p99_ms: float | None
    rates: list[RateRow]
    publishers: list[PublisherRow]
    consumers: list[ConsumerRow]
    thresholds: Thresholds
    alerts: int = 0  # system.latency.degraded events published so far
    red: bool = False
    why: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def worst(self, n: int = 3) -> list[dict[str, Any]]:
        """The source/types with the highest p99, for ``system.latency.degraded``."""
        rows = sorted((r for r in self.rates if r.p99_ms is not None), key=lambda r: -(r.p99_ms or 0.0))
        return [{"source": r.source, "type": r.type, "p99_ms": r.p99_ms} for r in rows[:n]]


class Window:
    """Samples of the last ``window_s`` seconds, the latest heartbeat of every publisher, the consumers' lag."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.samples: deque[Sample] = deque()
        self.heartbeats: dict[str, tuple[float, str, dict[str, Any]]] = {}  # id -> (stored, type, data)
        self.consumers: list[ConsumerRow] = []

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def heartbeat(self, stored: float, event_type: str, data: dict[str, Any]) -> None:
        """Keep a publisher's newest health or stopped event (they may arrive out of order on start-up)."""
        pid = str(data.get("publisher_id") or "")
        if pid and (pid not in self.heartbeats or self.heartbeats[pid][0] <= stored):
            self.heartbeats[pid] = (stored, event_type, data)

    def prune(self, now: float) -> None:
        while self.samples and self.samples[0].stored < now - self.window_s:
            self.samples.popleft()

    def snapshot(self, stream: str, namespace: str, now: float, limits: Thresholds) -> Snapshot:
        self.prune(now)
        groups: dict[tuple[str, str], list[float]] = {}
        for s in self.samples:
            groups.setdefault((s.source, s.type), []).append(s.latency_ms)
        rates = [_rate(src, typ, lat, self.window_s, limits) for (src, typ), lat in groups.items()]
        rates.sort(key=lambda r: (-r.events, r.source, r.type))
        everything = [s.latency_ms for s in self.samples]
        publishers = [
            _publisher(stored, etype, data, now, limits)
            for stored, etype, data in self.heartbeats.values()
            if now - stored <= FORGET_AFTER_S
        ]
        publishers.sort(key=lambda p: p.publisher_id)
        consumers = [_consumer(c, limits) for c in self.consumers]
        snap = Snapshot(
            stream=stream,
            namespace=namespace,
            window_s=self.window_s,
            at=now,
            events=len(everything),
            per_s=round(len(everything) / self.window_s, 2),
            p50_ms=percentile(everything, 0.50),
            p99_ms=percentile(everything, 0.99),
            rates=rates,
            publishers=publishers,
            consumers=consumers,
            thresholds=limits,
        )
        if limits.max_p99_ms is not None and snap.p99_ms is not None and snap.p99_ms > limits.max_p99_ms:
            snap.why.append(f"p99 {snap.p99_ms} ms > {limits.max_p99_ms:g} ms")
        rows: Iterable[RateRow | PublisherRow | ConsumerRow] = [*rates, *publishers, *consumers]
        snap.red = bool(snap.why) or any(r.red for r in rows)
        return snap


def _rate(source: str, etype: str, latencies: list[float], window_s: float, limits: Thresholds) -> RateRow:
    row = RateRow(
        source=source,
        type=etype,
        events=len(latencies),
        per_s=round(len(latencies) / window_s, 2),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
    )
    if limits.max_p99_ms is not None and row.p99_ms is not None and row.p99_ms > limits.max_p99_ms:
        row.why.append(f"p99 {row.p99_ms} ms > {limits.max_p99_ms:g} ms")
    row.red = bool(row.why)
    return row


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _publisher(stored: float, etype: str, data: dict[str, Any], now: float, limits: Thresholds) -> PublisherRow:
    given = data.get("stats")
    stats: dict[str, Any] = given if isinstance(given, dict) else {}
    interval = _float(data.get("interval_s"))
    stopped = etype == STOPPED
    age = max(0.0, now - stored)
    stale_after = limits.stale_after_s if limits.stale_after_s is not None else (3 * interval if interval else None)
    row = PublisherRow(
        publisher_id=str(data.get("publisher_id")),
        state="stopped" if stopped else str(data.get("state") or "?"),
        age_s=round(age, 1),
        interval_s=interval,
        stale=not stopped and stale_after is not None and age > stale_after,
        queue_depth=_int(data.get("queue_depth", stats.get("queue_depth"))),
        spool_bytes=_int(data.get("spool_bytes", stats.get("spool_bytes"))),
        oldest_unacked_age_s=_float(data.get("oldest_unacked_age_s")),
        acked=_int(stats.get("acked")),
        dropped=_int(stats.get("dropped_total")),
        reason=str(data["reason"]) if stopped and data.get("reason") is not None else None,
        compute=data["compute"] if isinstance(data.get("compute"), dict) else {},
    )
    if row.stale:
        row.why.append(f"silent {age:.0f} s > {stale_after:g} s")  # no heartbeat for longer than allowed
    row.red = bool(row.why)
    return row


def _consumer(c: ConsumerRow, limits: Thresholds) -> ConsumerRow:
    row = dataclasses.replace(c, why=[])
    if limits.max_lag is not None and row.lag > limits.max_lag:
        row.why.append(f"lag {row.lag} > {limits.max_lag}")
    row.red = bool(row.why)
    return row
