"""A publisher's metrics through OpenTelemetry: read from its ``Stats`` when a reader collects, never per event.

Settings: the section ``telemetry_settings.TelemetrySettings``. Nothing happens without ``opentelemetry-api``
(an optional package: every MLflow 3 runtime ships it) or with ``otel_metrics = false``. With it, the
publisher registers on the global ``MeterProvider`` (the application's, e.g. one exporting OTLP to a
collector; the API's default provider records nothing):

* counters (observable, cumulative): ``databricks_nats.events.emitted`` and ``…acked`` per ``source``,
  ``…duplicates``, ``…dropped`` per ``reason``, ``…spooled``, ``…retried``; ``databricks_nats.connection.connects``
  and ``…reconnects``;
* a histogram ``databricks_nats.ack.latency`` (seconds): the ack latencies measured since the last collection,
  recorded when a reader collects (off the publishing path) — all of them up to 1,024 per collection, beyond
  that a uniform sample of 1,024 (recording one costs the SDK microseconds; counts are in ``events.acked``);
* gauges: ``databricks_nats.queue.depth``, ``databricks_nats.spool.size`` (bytes),
  ``databricks_nats.unacked.oldest_age`` (seconds, events held in memory) and ``databricks_nats.connection.state``
  (1 for the current ``state``, 0 for the others).

Every measurement carries ``workspace`` and ``env`` (and ``namespace``). The only cost on the publishing path is
the worker thread counting events per source (a dict increment per event) while telemetry is on.
``prometheus_port`` (a port, 0 = off) serves these metrics for scraping through the official OpenTelemetry
Prometheus exporter (``opentelemetry-exporter-prometheus``), on a provider of our own, for drivers where no
OTLP collector is reachable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["CONNECTION_STATES", "Telemetry", "start_telemetry", "stop_telemetry"]

log = logging.getLogger("databricks_nats")
CONNECTION_STATES = ("connecting", "connected", "disconnected", "closed")
_prometheus_lock = threading.Lock()
_prometheus: dict[tuple[str, int], Any] = {}  # (host, port) -> its MeterProvider: one HTTP server per port


class Telemetry:
    """What one publisher reports: observations read from its ``stats`` and the ``gauges()`` it returns."""

    def __init__(
        self, stats: Any, gauges: Callable[[], dict[str, Any]], attrs: dict[str, str], collected: bool = True
    ) -> None:
        self._stats, self._gauges, self.attrs = stats, gauges, attrs
        stats.by_source = {}  # the worker counts per source from now on
        # ack latencies since the last collection, drained into the histogram; kept only once something collects
        # (the API's default provider never does: a runtime without a collector pays nothing for them)
        stats.latency_tap = [] if collected else None

    def observe(self, name: str) -> list[tuple[float, dict[str, str]]]:
        """(value, attributes) of one instrument (its name without ``databricks_nats.``)."""
        stats, attrs = self._stats, self.attrs
        if name in ("events.emitted", "events.acked"):
            i = 0 if name == "events.emitted" else 1
            return [(c[i], {**attrs, "source": s}) for s, c in list((stats.by_source or {}).items())]
        if name == "events.dropped":
            return [(n, {**attrs, "reason": r}) for r, n in list(stats.dropped.items())]
        if name == "connection.state":
            return [(1 if s == stats.connection else 0, {**attrs, "state": s}) for s in CONNECTION_STATES]
        if name in _STATS:
            return [(getattr(stats, _STATS[name]), attrs)]
        value = self._gauges().get(_GAUGES[name])
        return [(value, attrs)] if value is not None else []

    def latencies(self) -> list[float]:
        """The ack latencies measured since the last call."""
        stats = self._stats  # the first collection of a provider set later switches the tap on
        tap, stats.latency_tap, stats.tap_seen = stats.latency_tap or [], [], 0
        return tap


_STATS = {
    "events.duplicates": "duplicates",
    "events.spooled": "spooled",
    "events.retried": "retried",
    "connection.connects": "connects",
    "connection.reconnects": "reconnects",
}
_GAUGES = {"queue.depth": "queue_depth", "spool.size": "spool_bytes", "unacked.oldest_age": "oldest_unacked_age_s"}
_COUNTERS = {
    "events.emitted": "events encoded by the publisher, per source",
    "events.acked": "events stored by the stream (core: flushed), per source",
    "events.duplicates": "acks saying the stream already had the event",
    "events.dropped": "events lost, per reason",
    "events.spooled": "events written to the spool",
    "events.retried": "publishes sent again",
    "connection.connects": "connections made to NATS from scratch",
    "connection.reconnects": "reconnections after a connection was lost",
}
_GAUGE_DOCS = {
    "queue.depth": ("", "events waiting in the publishers' inboxes"),
    "spool.size": ("By", "bytes in the spools"),
    "unacked.oldest_age": ("s", "age of the oldest event in memory not yet acked"),
    "connection.state": ("", "publishers in each connection state"),
}


class _Instruments:
    """The instruments of one meter, created once; each collection reads every live publisher's telemetry."""

    def __init__(self, meter: Any) -> None:
        from opentelemetry.metrics import Observation

        self.meter = meter  # kept alive, so no other meter ever gets its id
        self.live: list[Telemetry] = []
        self._obs = Observation
        self._latency = meter.create_histogram(
            "databricks_nats.ack.latency", unit="s", description="publish to JetStream ack (core: flush)"
        )
        for name, what in _COUNTERS.items():
            meter.create_observable_counter(f"databricks_nats.{name}", callbacks=[self._reader(name)], description=what)
        for name, (unit, what) in _GAUGE_DOCS.items():
            meter.create_observable_gauge(
                f"databricks_nats.{name}", callbacks=[self._reader(name)], unit=unit, description=what
            )

    def _reader(self, name: str) -> Callable[[Any], Iterable[Any]]:
        def observe(options: Any) -> Iterable[Any]:
            merged: dict[tuple[tuple[str, str], ...], tuple[float, dict[str, str]]] = {}
            try:
                if name == "queue.depth":  # a collection is under way: hand it the latencies measured meanwhile
                    for t in list(self.live):
                        for seconds in t.latencies():
                            self._latency.record(seconds, t.attrs)
                for t in list(self.live):
                    for value, attrs in t.observe(name):
                        key = tuple(sorted(attrs.items()))
                        before = merged.get(key, (0, attrs))[0]  # two publishers alike: summed (oldest: the max)
                        merged[key] = (max(before, value) if name == "unacked.oldest_age" else before + value, attrs)
            except Exception:  # a metrics bug never becomes an error storm in the reader's thread
                log.debug("databricks-nats: metric %s could not be read", name, exc_info=True)
            return [self._obs(value, attrs) for value, attrs in merged.values()]

        return observe


_instruments: dict[int, _Instruments] = {}  # id(meter) -> its instruments (each holds its meter: ids stay unique)
_global_meter: Any = None


def _meter(settings: Any) -> Any:
    """The meter to register on: the Prometheus endpoint's provider when one is asked for, else the global one."""
    from importlib.metadata import version

    from opentelemetry import metrics

    try:
        ours = version("databricks-nats")
    except Exception:  # noqa: BLE001 - running from a checkout without metadata
        ours = "0"
    port = int(getattr(settings, "prometheus_port", 0))
    if port:
        return _prometheus_provider(str(settings.prometheus_host), port).get_meter("databricks_nats", ours)
    global _global_meter
    if _global_meter is None:  # one meter for the process: the API's proxy follows a provider set later
        _global_meter = metrics.get_meter("databricks_nats", ours)
    return _global_meter


def _prometheus_provider(host: str, port: int) -> Any:
    with _prometheus_lock:
        provider = _prometheus.get((host, port))
        if provider is None:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from opentelemetry.sdk.metrics import MeterProvider
            from prometheus_client import start_http_server

            reader = PrometheusMetricReader()
            start_http_server(port, addr=host)
            provider = _prometheus[(host, port)] = MeterProvider(metric_readers=[reader])
            log.info("databricks-nats: Prometheus metrics on http://%s:%d/metrics", host, port)
        return provider


def start_telemetry(settings: Any, stats: Any, gauges: Callable[[], dict[str, Any]]) -> Telemetry | None:
    """The publisher's telemetry, or None (switched off, OpenTelemetry not installed, or it failed: logged)."""
    if not getattr(settings, "otel_metrics", True) and not getattr(settings, "prometheus_port", 0):
        return None
    try:
        meter = _meter(settings)
    except ImportError as e:
        if getattr(settings, "prometheus_port", 0):
            log.warning(
                "databricks-nats: prometheus_port is set but %s is not installed: "
                "pip install opentelemetry-sdk opentelemetry-exporter-prometheus",
                e.name,
            )
        return None
    except Exception as e:  # noqa: BLE001 - metrics never stop publishing (a port in use, …)
        log.warning("databricks-nats: metrics are off: %s: %s", type(e).__name__, e)
        return None
    attrs = {"workspace": str(settings.workspace), "env": str(settings.env), "namespace": str(settings.namespace)}
    telemetry = Telemetry(stats, gauges, attrs, collected=_collected(meter))
    with _prometheus_lock:
        instruments = _instruments.get(id(meter))
        if instruments is None:
            instruments = _instruments[id(meter)] = _Instruments(meter)
        instruments.live.append(telemetry)
    return telemetry


def _collected(meter: Any) -> bool:
    """Whether anything collects from ``meter`` yet: not while the global provider is still the API's default."""
    from opentelemetry import metrics

    if meter is not _global_meter:
        return True  # the Prometheus endpoint's provider
    return type(metrics.get_meter_provider()).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")


def stop_telemetry(telemetry: Telemetry | None) -> None:
    """A publisher closed: its telemetry is read no more."""
    if telemetry is None:
        return
    with _prometheus_lock:
        for instruments in _instruments.values():
            if telemetry in instruments.live:
                instruments.live.remove(telemetry)
