"""table_updated: pointers to tables with location and format; never raising into user code."""

from __future__ import annotations

from typing import Any

from databricks_nats import spark as nats_spark
from databricks_nats.integrations.spark.tables import history_entry


def test_table_updated_names_location_and_format(spark: Any, published: Any, tmp_path: Any) -> None:
    """A pointer to a parquet table carries its full name, its location and its format."""
    spark.range(5).write.mode("overwrite").saveAsTable("features_daily")
    event = nats_spark.table_updated(spark, "default.features_daily", rows_written=5)
    assert event is not None
    [found] = [e["data"] for e in published("data.table.updated")]
    assert found["table"] == "spark_catalog.default.features_daily"
    assert found["location"].endswith("features_daily")
    assert found["format"] == "parquet"
    assert found["version"] is None
    assert found["rows_written"] == 5
    [stored] = [e for e in published("data.table.updated")]
    assert stored["dataref"] == found["location"]


def test_unknown_table_still_publishes_the_name(spark: Any, published: Any) -> None:
    """A table the catalog cannot describe is announced by name, with no exception for the caller."""
    nats_spark.table_updated(spark, "main.ml.does_not_exist", version=7, operation="MERGE")
    [found] = [e["data"] for e in published("data.table.updated")]
    assert found["table"] == "main.ml.does_not_exist"
    assert (found["location"], found["version"], found["operation"]) == (None, 7, "MERGE")


def test_delta_history_row_gives_version_and_operation(spark: Any) -> None:
    """The newest row of a Delta history (same columns as DESCRIBE HISTORY) gives version and operation."""
    row = spark.createDataFrame(
        [(12, "WRITE", "2026-11-21 10:00:00")], "version LONG, operation STRING, timestamp STRING"
    ).first()
    assert history_entry(row) == {"version": 12, "operation": "WRITE"}
