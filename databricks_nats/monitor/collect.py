"""Reading an environment's stream for the monitor: the stored events, the publishers' heartbeats, the consumers.

``Collector`` reads with its own ephemeral consumer (no acks, deleted by the server when the monitor goes
away) from ``window`` seconds ago onwards, so the first snapshot already covers a full window. Latency is
the stream's stored timestamp (JetStream message metadata) minus the event's ``time``. The latest heartbeat
of every publisher comes from a last-per-subject read of ``system.publisher.>``; durable consumers' lag
from the JetStream API. ``Alerter`` publishes ``system.latency.degraded``, at most once per window.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import time
from typing import Any

from databricks_nats.model.position import StartPosition
from databricks_nats.monitor.model import HEALTH, STOPPED, ConsumerRow, Sample, Snapshot, Thresholds, Window
from databricks_nats.settings import Settings

__all__ = ["Alerter", "Collector"]

BATCH = 256
_IDLE = 30.0  # seconds before the server deletes the consumer of a monitor that went away


def _stamp(value: Any) -> float | None:
    """An envelope's ``time`` as epoch seconds (None when it has none or cannot be read)."""
    try:
        return _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Collector:
    """Reads the stream of ``settings``' namespace into a ``Window``; ``snapshot()`` adds the consumers' lag."""

    def __init__(self, settings: Settings, window_s: float, limits: Thresholds) -> None:
        self.settings = settings
        self.limits = limits
        self.window = Window(window_s)
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._backlog = 1

    async def open(self) -> None:
        from nats.js.api import DeliverPolicy

        from databricks_nats._factory import default_identity
        from databricks_nats.integrations.databricks import DatabricksSecrets
        from databricks_nats.transport import reader

        s = self.settings
        self._nc = await reader.connect(s, "monitor", DatabricksSecrets(), default_identity(s))
        self._js = self._nc.jetstream()
        await self._js.stream_info(s.stream_name)  # a missing stream is one clear error, not an empty view
        last, stored = await self._consumer(
            f"{s.namespace}.system.publisher.>", deliver_policy=DeliverPolicy.LAST_PER_SUBJECT
        )
        try:
            if stored:
                await self._drain(last, heartbeats_only=True)
        finally:
            with contextlib.suppress(Exception):
                await last.unsubscribe()
        since = StartPosition.at(_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=self.window.window_s))
        self._sub, self._backlog = await self._consumer(f"{s.namespace}.>", **reader.deliver_options(since))

    async def _consumer(self, subject: str, **start: Any) -> tuple[Any, int]:
        """A pull subscription on a new ephemeral consumer, and how many stored messages it has to deliver."""
        from nats.js.api import AckPolicy, ConsumerConfig

        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, inactive_threshold=_IDLE, mem_storage=True, filter_subject=subject, **start
        )
        info = await self._js.add_consumer(self.settings.stream_name, config)
        sub = await self._js.pull_subscribe_bind(info.name, stream=self.settings.stream_name)
        return sub, int(info.num_pending or 0)

    async def _drain(self, sub: Any, heartbeats_only: bool = False) -> int:
        """Read until the consumer has nothing pending (or nothing arrives within a second)."""
        read = 0
        while True:
            try:
                msgs = await sub.fetch(BATCH, timeout=1.0)
            except asyncio.TimeoutError:
                return read
            for msg in msgs:
                self._take(msg, heartbeats_only)
            read += len(msgs)
            if not msgs or msgs[-1].metadata.num_pending == 0:
                return read

    def _take(self, msg: Any, heartbeats_only: bool = False) -> None:
        try:
            envelope = json.loads(msg.data)
        except ValueError:
            return  # not an event of ours: nothing to measure
        if not isinstance(envelope, dict):
            return
        stored = msg.metadata.timestamp.timestamp()
        etype = str(envelope.get("type", "")).removeprefix("databricks.")
        data = envelope.get("data")
        if etype in (HEALTH, STOPPED) and isinstance(data, dict):
            self.window.heartbeat(stored, etype, data)
        if heartbeats_only:
            return
        sent = _stamp(envelope.get("time"))
        latency = max(0.0, (stored - sent) * 1000) if sent is not None else 0.0  # clock skew is not a speed-up
        self.window.add(Sample(stored, str(envelope.get("source", "")), etype, latency))

    async def catch_up(self) -> int:
        """Read everything stored so far; return how many events."""
        backlog, self._backlog = self._backlog, 1  # nothing stored at start: no need to wait for a fetch
        return await self._drain(self._sub) if backlog else 0

    async def poll(self, seconds: float) -> int:
        """Read what arrives during ``seconds``; return how many events."""
        deadline = time.monotonic() + seconds
        read = 0
        while (left := deadline - time.monotonic()) > 0:
            try:
                msgs = await self._sub.fetch(BATCH, timeout=max(0.05, left))
            except asyncio.TimeoutError:
                break
            for msg in msgs:
                self._take(msg)
            read += len(msgs)
        return read

    async def consumers(self) -> list[ConsumerRow]:
        """Every durable consumer of the stream with its lag (ephemeral ones, the monitor's own included, are not
        listed: nobody resumes them)."""
        rows = []
        for info in await self._js.consumers_info(self.settings.stream_name):
            config = info.config
            if not config.durable_name:
                continue
            filters = list(config.filter_subjects or ([config.filter_subject] if config.filter_subject else []))
            pending, ack_pending = int(info.num_pending or 0), int(info.num_ack_pending or 0)
            rows.append(
                ConsumerRow(
                    name=str(info.name),
                    filter=", ".join(filters) or ">",
                    pending=pending,
                    ack_pending=ack_pending,
                    redelivered=int(info.num_redelivered or 0),
                    lag=pending + ack_pending,
                )
            )
        return sorted(rows, key=lambda r: r.name)

    async def snapshot(self) -> Snapshot:
        self.window.consumers = await self.consumers()
        s = self.settings
        return self.window.snapshot(s.stream_name, s.namespace, time.time(), self.limits)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                if self._sub is not None:
                    await self._sub.unsubscribe()
                await nc.close()


class Alerter:
    """Publishes ``system.latency.degraded`` when the window's p99 crosses ``--max-p99-ms``, once per window."""

    def __init__(self, settings: Settings, bound_ms: float | None) -> None:
        self.settings = settings
        self.bound_ms = bound_ms
        self.sent = 0
        self._last: float | None = None
        self._client: Any = None

    def check(self, snap: Snapshot) -> bool:
        """Publish when due; True when an alert went out."""
        snap.alerts = self.sent
        if self.bound_ms is None or snap.p99_ms is None or snap.p99_ms <= self.bound_ms:
            return False
        if self._last is not None and snap.at - self._last < snap.window_s:
            return False
        if self._client is None:
            from databricks_nats.client import Client

            self._client = Client(self.settings)
        data = {
            "p50_ms": snap.p50_ms,
            "p99_ms": snap.p99_ms,
            "bound_ms": self.bound_ms,
            "window_s": snap.window_s,
            "events": snap.events,
            "worst": snap.worst(),
        }
        if self._client.emit("system.latency.degraded", data) is None:
            return False  # could not be created (fail-open: the client logged why)
        self._last = snap.at
        self.sent += 1
        snap.alerts = self.sent
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Flush what was published; True when every alert was acknowledged by the stream."""
        if self._client is None:
            return True
        return bool(self._client.close(timeout=timeout).ok)
