"""The Spark listeners' settings section: the volume policy of streaming progress and SQL executions.

Registered with the core settings when imported (``integrations/sections.py`` imports it with the package),
so ``DATABRICKS_NATS_SPARK_MIN_EXECUTION_MS``, the settings file and the cluster-wide Spark conf key
``spark.databricks_nats.spark_min_execution_ms`` work as for any setting. Imports neither PySpark nor the
listeners.
"""

from __future__ import annotations

from dataclasses import dataclass

from databricks_nats.settings import non_negative, positive, register_section, setting

__all__ = ["SparkSettings"]


@register_section
@dataclass(frozen=True)
class SparkSettings:
    """Read with ``settings.section(SparkSettings)``; ``attach(...)`` arguments override them per session."""

    spark_progress_interval: float = setting(
        10.0, non_negative(float), doc="seconds between published progress events of one streaming query"
    )
    spark_min_execution_ms: int = setting(
        1000, non_negative(int), doc="Spark executions this long are published one by one; shorter ones are counted"
    )
    spark_summary_interval: float = setting(30.0, positive(float), doc="seconds between summaries of short executions")
