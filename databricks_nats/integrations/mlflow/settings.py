"""The MLflow hook's settings section: how metrics and traces are published and which param/tag keys never are.

Registered with the core settings when imported (``integrations/sections.py`` imports it with the package),
so ``configure(metrics_mode="every")``, ``DATABRICKS_NATS_METRICS_MODE``, the settings file and the Spark conf
key ``spark.databricks_nats.metrics_mode`` work as for any setting. Standard library only: MLflow imports
this package while ``import mlflow`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from databricks_nats.settings import choice, patterns, positive, register_section, setting

__all__ = ["DENY_KEYS", "MlflowSettings", "sample_rate", "traces_mode"]

DENY_KEYS = ("*password*", "*secret*", "*token*", "*credential*", "*api_key*", "*apikey*", "*private_key*")


def traces_mode(v: object) -> str:
    """``every``, ``off`` or ``sample:<rate>`` with 0 < rate <= 1 (``sample:0.1``: one trace in ten)."""
    s = str(v).strip().lower()
    if s in ("every", "off"):
        return s
    if s.startswith("sample:"):
        try:
            rate = float(s[7:])
        except ValueError:
            rate = float("nan")
        if 0 < rate <= 1:
            return f"sample:{rate:g}"
    raise ValueError("expected every, off or sample:<rate> with a rate in (0, 1], e.g. sample:0.1")


def sample_rate(mode: str) -> float:
    """The share of traces announced on their own under ``mode`` (0 for off)."""
    return 1.0 if mode == "every" else 0.0 if mode == "off" else float(mode[7:])


@register_section
@dataclass(frozen=True)
class MlflowSettings:
    """Read with ``settings.section(MlflowSettings)``."""

    metrics_mode: str = setting("coalesce", choice("coalesce", "every", "off"), doc="MLflow metric events per run")
    traces_mode: str = setting(
        "every", traces_mode, doc="mlflow.trace.logged events: every, off, or sample:<rate> (the others counted)"
    )
    metrics_interval: float = setting(1.0, positive(float), doc="seconds between coalesced metric events of one run")
    deny_keys: tuple[str, ...] = setting(
        DENY_KEYS, patterns, doc="glob patterns of param/tag keys never published (comma-separated)"
    )
    allow_keys: tuple[str, ...] = setting(
        (), patterns, doc="when set, only param/tag keys matching these globs are published"
    )
