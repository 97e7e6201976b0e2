"""Health heartbeats: a publisher says it is alive, and says when it stops.

Every client whose publisher runs emits ``system.publisher.health`` every ``health_interval`` seconds (default
60; 0 = none), the first one interval after it started, from a daemon thread of its own: its stats,
connection state, queue and spool, the age of its oldest un-acked event, its compute and versions (the
envelope's ``data.context`` adds the Databricks context). Consumers (``databricks-nats monitor``) flag a
publisher whose last heartbeat is older than a few intervals: a driver that was killed, or one stuck. A clean
close (and the exit flush) of a publisher that has announced itself emits ``system.publisher.stopped``, so a
stopped publisher is told apart from a silent one; a process shorter than one interval says nothing. The
heartbeat goes through the same durable path as every event (spooled while NATS is away); it never raises.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import socket
import sys
import threading
import uuid
from typing import Any

__all__ = ["Heartbeat"]

log = logging.getLogger("databricks_nats")

_STATS = (
    "emitted",
    "acked",
    "duplicates",
    "retried",
    "spooled",
    "replayed",
    "dropped",
    "dropped_total",
    "pending",
    "connects",
    "reconnects",
    "ack_latency_ms",
    "last_error",
    "last_error_at",
    "mode",
)


def publisher_id() -> str:
    """``<host>-<pid>-<8 hex>``: one subject token (no dots), unique per publisher."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _compute() -> dict[str, Any]:
    runtime = os.environ.get("DATABRICKS_RUNTIME_VERSION")
    if not runtime:
        kind = "local"
    elif "client" in runtime.lower() or os.environ.get("IS_SERVERLESS", "").lower() == "true":
        kind = "serverless"
    else:
        kind = "classic"
    return {"kind": kind, "runtime": runtime, "host": socket.gethostname()[:100], "pid": os.getpid()}


def _versions() -> dict[str, Any]:
    """Our version, Python's, and those of MLflow and PySpark when the process imported them (never imports)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, Any] = {"python": platform.python_version()}
    for package, module in (("databricks-nats", None), ("nats-py", None), ("mlflow", "mlflow"), ("pyspark", "pyspark")):
        if module is not None and module not in sys.modules:
            continue
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = getattr(sys.modules.get(module or ""), "__version__", None)
    return found


class Heartbeat:
    """The heartbeat thread of one client (see the module docstring)."""

    def __init__(self, client: Any, interval: float) -> None:
        self.client = client
        self.interval = interval
        self.id = publisher_id()
        self.beats = 0
        self._stop = threading.Event()
        self._compute = _compute()
        self._versions: dict[str, Any] = {}  # read on the heartbeat thread (package metadata costs milliseconds)
        self._thread = threading.Thread(target=self._run, name="databricks-nats-health", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def _data(self) -> dict[str, Any]:
        transport = self.client.transport
        stats = transport.stats() if transport is not None else {}
        if not self._versions or ("mlflow" not in self._versions and "mlflow" in sys.modules):  # MLflow came later
            self._versions = _versions()
        return {
            "publisher_id": self.id,
            "stats": {k: stats[k] for k in _STATS if k in stats},
            "compute": self._compute,
            "versions": self._versions,
            "interval_s": self.interval,
            "state": str(stats.get("connection", "closed")),
            "queue_depth": int(stats.get("queue_depth", 0)),
            "spool_bytes": int(stats.get("spool_bytes", 0)),
            "oldest_unacked_age_s": stats.get("oldest_unacked_age_s"),
        }

    def beat(self) -> None:
        """Emit one ``system.publisher.health`` now."""
        try:
            if self.client.emit("system.publisher.health", self._data()) is not None:
                self.beats += 1
        except Exception:
            log.debug("databricks-nats: heartbeat failed", exc_info=True)

    def stop(self, reason: str) -> None:
        """Stop beating and, when it has announced itself, emit ``system.publisher.stopped`` (once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if not self.beats:
            return
        try:
            data = self._data()
            stopped = {k: data[k] for k in ("publisher_id", "stats", "compute", "versions")}
            self.client.emit("system.publisher.stopped", {**stopped, "reason": reason})
        except Exception:
            log.debug("databricks-nats: stopped event failed", exc_info=True)
