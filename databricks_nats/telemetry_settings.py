"""The observability settings section: OpenTelemetry metrics, the Prometheus endpoint and health heartbeats.

A section module (see ``integrations/sections.py``): standard library only, imported with the package root,
so MLflow's ``import mlflow`` (which loads our entry point) never imports the transport through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from databricks_nats.settings import register_section, setting
from databricks_nats.values import boolean, non_negative

__all__ = ["TelemetrySettings"]


def _port(v: Any) -> int:
    port = int(v)
    if not 0 <= port <= 65535:
        raise ValueError("must be a TCP port (0 = off)")
    return port


@register_section
@dataclass(frozen=True)
class TelemetrySettings:
    """Read with ``settings.section(TelemetrySettings)``."""

    otel_metrics: bool = setting(True, boolean, doc="publish metrics through OpenTelemetry when it is installed")
    prometheus_port: int = setting(0, _port, doc="serve the metrics for Prometheus on this port (0 = off)")
    prometheus_host: str = setting("127.0.0.1", str, doc="the address the Prometheus endpoint listens on")
    health_interval: float = setting(
        60.0, non_negative(float), doc="seconds between system.publisher.health heartbeats (0 = none)"
    )
