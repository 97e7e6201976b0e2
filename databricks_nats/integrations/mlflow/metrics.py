"""Per-run metric coalescing: at most one ``mlflow.run.metrics`` event per run per interval.

Each run keeps the latest value, step and timestamp of every metric key and the number of points since its
last event. A point arriving when the interval has passed emits at once; otherwise the run is due at
``last + interval`` and a single daemon thread, sleeping on a condition until the earliest due time (never
polling), emits it then. ``finish(run_id)`` emits the final event of a run. Mode ``every`` emits one event
per logging call; ``off`` emits none.

Events are handed to ``emit(run_id, owner, payload)`` while the lock is held (the hook publishes or queues
for its worker: it never blocks), so a periodic event taken by the thread can never be handed over after the
run's final event and its end. The payload has ``metrics``, ``points`` and ``final``; the hook adds what
describes the run (``owner`` is what ``add`` was given with the run's first points: the store).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MetricsCoalescer"]

log = logging.getLogger("databricks_nats")

MAX_KEYS = 200  # metric keys kept per run (the event is also size-capped)


class _RunMetrics:
    __slots__ = ("due", "last_emit", "latest", "owner", "points")

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.latest: dict[str, dict[str, Any]] = {}
        self.points = 0
        self.last_emit = 0.0
        self.due: float | None = None


class MetricsCoalescer:
    """Collects metric points per run and emits bounded ``mlflow.run.metrics`` events."""

    def __init__(self, emit: Callable[[str, Any, dict[str, Any]], None], mode: str, interval: float) -> None:
        self._emit = emit
        self.mode = mode
        self.interval = interval
        self._runs: dict[str, _RunMetrics] = {}
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def add(self, run_id: str, owner: Any, metrics: list[Any]) -> None:
        """Record metric entities (key, value, step, timestamp) logged to a run (``owner``: handed to ``emit``)."""
        if self.mode == "off" or not metrics:
            return
        now = time.monotonic()
        with self._cond:
            run = self._runs.get(run_id)
            if run is None:
                run = self._runs[run_id] = _RunMetrics(owner)
            for m in metrics:
                have = run.latest.get(m.key)
                if have is None and len(run.latest) >= MAX_KEYS:
                    continue
                # MLflow's "latest" is the point with the highest (step, timestamp, value), not the last to arrive.
                if have is None or (m.step, m.timestamp, m.value) >= (have["step"], have["timestamp"], have["value"]):
                    run.latest[m.key] = {"value": m.value, "step": m.step, "timestamp": m.timestamp}
            run.points += len(metrics)
            if self.mode == "every" or now - run.last_emit >= self.interval:
                self._emit(run_id, run.owner, self._take(run, now, final=False))
            elif run.due is None:
                run.due = run.last_emit + self.interval
                self._ensure_thread()
                self._cond.notify()

    def latest(self, run_id: str) -> dict[str, Any]:
        """The latest value of each metric of a run (for the run's end event)."""
        with self._cond:
            run = self._runs.get(run_id)
            return {k: v["value"] for k, v in run.latest.items()} if run else {}

    def finish(self, run_id: str, then: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Emit the final metrics event (if points arrived since the last one), forget the run, return latest values.

        ``then(latest)`` (the run's end event) is called under the same lock: nothing this coalescer emits for
        the run can come between the final metrics event and it.
        """
        with self._cond:
            run = self._runs.pop(run_id, None)
            values = {k: v["value"] for k, v in run.latest.items()} if run is not None else {}
            if run is not None and self.mode != "off" and run.points:
                self._emit(run_id, run.owner, self._take(run, time.monotonic(), final=True))
            if then is not None:
                then(values)
        return values

    def flush_all(self) -> None:
        """Emit what every run has pending (at exit)."""
        with self._cond:
            for run_id, run in self._runs.items():
                if run.points:
                    self._emit(run_id, run.owner, self._take(run, time.monotonic(), final=False))

    def _take(self, run: _RunMetrics, now: float, final: bool) -> dict[str, Any]:
        payload = {"metrics": dict(run.latest), "points": run.points, "final": final}
        run.points = 0
        run.last_emit = now
        run.due = None
        return payload

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="databricks-nats-metrics", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                dues = [r.due for r in self._runs.values() if r.due is not None]
                if not dues:
                    self._cond.wait()
                    continue
                wait = min(dues) - now
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                for run_id, r in self._runs.items():
                    if r.due is not None and r.due <= now:
                        try:
                            self._emit(run_id, r.owner, self._take(r, now, final=False))
                        except Exception:  # strict mode raises; this thread must live on
                            log.warning("databricks-nats: periodic metrics event failed", exc_info=True)
