"""The MLflow hook's settings section: how metrics are published and which param/tag keys never are.

Registered with the core settings when imported (``integrations/sections.py`` imports it with the package),
so ``configure(metrics_mode="every")``, ``DATABRICKS_NATS_METRICS_MODE``, the settings file and the Spark conf
key ``spark.databricks_nats.metrics_mode`` work as for any setting. Standard library only: MLflow imports
this package while ``import mlflow`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from databricks_nats.settings import choice, patterns, positive, register_section, setting

__all__ = ["DENY_KEYS", "MlflowSettings"]

DENY_KEYS = ("*password*", "*secret*", "*token*", "*credential*", "*api_key*", "*apikey*", "*private_key*")


@register_section
@dataclass(frozen=True)
class MlflowSettings:
    """Read with ``settings.section(MlflowSettings)``."""

    metrics_mode: str = setting("coalesce", choice("coalesce", "every", "off"), doc="MLflow metric events per run")
    metrics_interval: float = setting(1.0, positive(float), doc="seconds between coalesced metric events of one run")
    deny_keys: tuple[str, ...] = setting(
        DENY_KEYS, patterns, doc="glob patterns of param/tag keys never published (comma-separated)"
    )
    allow_keys: tuple[str, ...] = setting(
        (), patterns, doc="when set, only param/tag keys matching these globs are published"
    )
