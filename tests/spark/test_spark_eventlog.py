"""read_events: the JetStream event log as a DataFrame with a fixed schema, read in disjoint partitions."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from chispa import assert_df_equality

import databricks_nats
from databricks_nats import spark as nats_spark
from databricks_nats.errors import StreamError
from databricks_nats.integrations.spark.eventlog import EVENT_LOG_SCHEMA
from databricks_nats.testing import read_stream


def _publish(count: int, prefix: str = "feature") -> None:
    for i in range(count):
        databricks_nats.emit(
            "mlflow.run.finished" if i % 3 == 0 else "data.table.updated",
            {"experiment_id": "1", "run_id": f"r{i}", "status": "FINISHED", "metrics": {}}
            if i % 3 == 0
            else {"table": f"main.{prefix}.t{i}", "location": f"s3://b/t{i}"},
        )


def _expected(spark: Any, url: str, stream: str, keep: Any = lambda m: True) -> Any:
    rows = []
    for m in read_stream(url, stream):
        env = m["envelope"]
        if not keep(m):
            continue
        data = env["data"]
        rows.append(
            (
                env["id"],
                dt.datetime.fromisoformat(env["time"].replace("Z", "+00:00")),
                env["type"].removeprefix("databricks."),
                env["source"],
                m["subject"],
                env["workspace"],
                env["env"],
                data.get("run_id") if env["type"].startswith("databricks.mlflow.") else None,
                None,
                env.get("dataref"),
                json.dumps(data, separators=(",", ":")),
                m["seq"],
            )
        )
    return spark.createDataFrame(rows, EVENT_LOG_SCHEMA)


@pytest.fixture
def log30(published: Any, nats_server: Any) -> Any:
    """Thirty events in this test's stream."""
    _publish(30)
    published()
    return databricks_nats.get_settings()


def test_read_events_matches_the_stream(spark: Any, log30: Any, nats_server: Any) -> None:
    """Every stored event comes back once, with the documented columns, in one partition or three."""
    expected = _expected(spark, nats_server.url, log30.stream_name)
    assert expected.count() == 30
    one = nats_spark.read_events(spark)
    three = nats_spark.read_events(spark, partitions=3)
    assert three.rdd.getNumPartitions() == 3
    assert_df_equality(one.orderBy("stream_seq"), expected, ignore_nullable=True)
    assert_df_equality(three.orderBy("stream_seq"), expected, ignore_nullable=True)


def test_read_events_by_type_and_sequence_range(spark: Any, log30: Any, nats_server: Any) -> None:
    """Type filters and [start, end) sequence bounds select exactly the matching stored events."""
    got = nats_spark.read_events(spark, types=["mlflow.run.finished"], start=4, end=20, partitions=2)
    expected = _expected(
        spark,
        nats_server.url,
        log30.stream_name,
        lambda m: m["envelope"]["type"] == "databricks.mlflow.run.finished" and 4 <= m["seq"] < 20,
    )
    assert expected.count() == 6
    assert_df_equality(got.orderBy("stream_seq"), expected, ignore_nullable=True)
    assert {r.mlflow_run_id for r in got.collect()} == {"r3", "r6", "r9", "r12", "r15", "r18"}


def test_read_events_by_time(spark: Any, published: Any, nats_server: Any) -> None:
    """A time window returns only events stored inside it."""
    _publish(3, "early")
    published()
    time.sleep(0.05)
    middle = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.05)
    _publish(4, "late")
    published()
    got = nats_spark.read_events(spark, start=middle)
    assert got.count() == 4
    assert nats_spark.read_events(spark, end=middle).count() == 3
    assert nats_spark.read_events(spark, start=dt.datetime.now(dt.timezone.utc)).count() == 0


def test_read_events_without_stream_is_a_clear_error(spark: Any, nats_server: Any, namespace: dict[str, str]) -> None:
    """Reading a workspace/env that has no stream raises StreamError naming the stream."""
    with pytest.raises(StreamError, match="DBX_"):
        nats_spark.read_events(spark, url=nats_server.url, workspace="nostream", env="dev")
