"""Counters and gauges of one publisher, updated by its worker thread and read by ``stats()``."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from databricks_nats.values import redact_url

__all__ = ["TAP_MAX", "RateLimitedLog", "Stats"]

TAP_MAX = 1024


class Stats:
    """Counters (monotonic), gauges (set by the worker) and a window of recent ack latencies."""

    def __init__(self) -> None:
        self.published = 0  # publish attempts sent to the server (retries included)
        self.acked = 0  # events confirmed (JetStream ack, or core flush)
        self.duplicates = 0  # acks saying the stream already had this event id
        self.retried = 0
        self.spooled = 0  # events written to the spool
        self.replayed = 0  # events adopted from a dead process's spool
        self.dropped: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.connection = "connecting"
        self.connects = 0  # connections made from scratch (the first, and after the server closed us)
        self.reconnects = 0  # nats-py's reconnects after a connection was lost
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._latencies: deque[float] = deque(maxlen=4096)
        # Kept only while OpenTelemetry metrics are on (telemetry.py): [encoded, acked] per source, and the ack
        # latencies measured since the last collection.
        self.by_source: dict[str, list[int]] | None = None
        self.latency_tap: list[float] | None = None
        self.tap_seen = 0  # latencies offered to the tap since it was last drained
        self.source_at = 3  # the subject token that names the source: <prefix>.<workspace>.<env>.<source>…

    def ack_latency(self, seconds: float) -> None:
        self._latencies.append(seconds)
        if self.latency_tap is not None:
            self._tap(seconds)

    def ack_latencies(self, seconds: list[float]) -> None:
        self._latencies.extend(seconds)
        if self.latency_tap is not None:
            for s in seconds:
                self._tap(s)

    def _tap(self, seconds: float) -> None:
        """Keep a uniform sample of at most TAP_MAX latencies per collection (reservoir sampling): recording one
        in an OpenTelemetry histogram costs microseconds, so a busy publisher's collection records a sample."""
        tap = self.latency_tap
        assert tap is not None
        self.tap_seen += 1
        if len(tap) < TAP_MAX:
            tap.append(seconds)
        else:
            j = random.randrange(self.tap_seen)
            if j < TAP_MAX:
                tap[j] = seconds

    def count_sources(self, subjects: Iterable[str], index: int) -> None:
        """Count events per source (``index`` 0: encoded, 1: acked), from their subjects; only while metrics are on."""
        counts = self.by_source
        if counts is None:
            return
        at = self.source_at
        for subject in subjects:
            source = subject.split(".", at + 1)[at] if subject.count(".") >= at else ""
            entry = counts.get(source)
            if entry is None:
                entry = counts[source] = [0, 0]
            entry[index] += 1

    def error(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        self.last_error = redact_url(f"{kind}: {message}")[:500]  # a client's error may quote a URL with its password
        self.last_error_at = time.time()

    def snapshot(self, **gauges: Any) -> dict[str, Any]:
        lat = sorted(self._latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3) if lat else None

        return {
            "published": self.published,
            "acked": self.acked,
            "duplicates": self.duplicates,
            "retried": self.retried,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
            "errors": dict(self.errors),
            "connection": self.connection,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "ack_latency_ms": {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99)},
            **gauges,
        }


class RateLimitedLog:
    """Log each kind of message at most once per interval, reporting how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval: float = 30.0) -> None:
        self._log = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def __call__(self, level: int, kind: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] += 1
            return
        self._last[kind] = now
        extra = self._suppressed.pop(kind, 0)
        if extra:
            msg += f" ({extra} similar message(s) suppressed)"
        self._log.log(level, msg, *args)
