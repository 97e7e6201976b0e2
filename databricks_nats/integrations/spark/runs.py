"""Which MLflow run is active, told to Spark so its listeners can name it (the MLflow hook calls this)."""

from __future__ import annotations

from typing import Any

from databricks_nats.integrations.spark import _compat

__all__ = ["set_active_run"]


def set_active_run(run_id: str | None) -> None:
    """Mark the driver's current thread with the active MLflow run id (classic sessions: a local property)."""
    from pyspark.sql import SparkSession

    spark: Any = SparkSession.getActiveSession()
    if spark is not None and _compat.has_jvm(spark):
        spark.sparkContext.setLocalProperty(_compat.RUN_PROPERTY, run_id)
