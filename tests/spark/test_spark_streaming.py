"""The streaming listener: lifecycle events, the progress volume policy, table pointers, failures, outages."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

import databricks_nats
from databricks_nats.testing import NatsServer, read_stream
from tests.spark.conftest import wait_until

SCHEMA = "id LONG, value DOUBLE"


def _write_files(folder: Path, count: int, rows: int = 10, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        lines = (json.dumps({"id": i * rows + j, "value": float(j)}) for j in range(rows))
        tmp = folder / f".part-{i}.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        tmp.rename(folder / f"part-{i:04d}.json")


def _stream(spark: Any, folder: Path) -> Any:
    return spark.readStream.schema(SCHEMA).option("maxFilesPerTrigger", 1).json(str(folder))


def _data(published: Any, prefix: str) -> list[dict[str, Any]]:
    return [e["data"] for e in published(prefix)]


def test_stream_lifecycle_and_bounded_progress(spark: Any, published: Any, attached: Any, tmp_path: Path) -> None:
    """A 6-batch stream publishes started, one progress standing for every batch (interval policy), terminated."""
    attached(progress_interval=3600)
    _write_files(tmp_path / "in", 6)
    query = (
        _stream(spark, tmp_path / "in")
        .writeStream.format("memory")
        .queryName("lifecycle")
        .trigger(availableNow=True)
        .option("checkpointLocation", str(tmp_path / "ck"))
        .start()
    )
    query.awaitTermination(120)
    assert wait_until(lambda: _data(published, "spark.stream.terminated"), spark)
    started = _data(published, "spark.stream.started")
    progress = _data(published, "spark.stream.progress")
    terminated = _data(published, "spark.stream.terminated")
    assert [s["name"] for s in started] == ["lifecycle"]
    assert started[0]["query_id"] == str(query.id)
    assert terminated[0]["error"] is None
    # the first batch with data is published at once; the other five are held back by the interval and
    # published as one final progress when the query terminates
    assert len(progress) == 2
    assert [p["batches"] for p in progress] == [1, 5]
    assert sum(p["rows_since_last"] for p in progress) == 60
    assert progress[-1]["batch_id"] == 5
    assert progress[0]["sources"][0]["input_rows"] == 10
    assert progress[0]["sink"]["description"].startswith("Memory")


def test_data_after_idle_is_published_at_once(spark: Any, published: Any, attached: Any, tmp_path: Path) -> None:
    """After an idle period the next batch with data is published immediately, and idle is announced once."""
    attached(progress_interval=3600)
    _write_files(tmp_path / "in", 1)
    query = (
        _stream(spark, tmp_path / "in")
        .writeStream.format("memory")
        .queryName("idle_policy")
        .trigger(processingTime="100 milliseconds")
        .option("checkpointLocation", str(tmp_path / "ck"))
        .start()
    )
    with_data = lambda: [p for p in _data(published, "spark.stream.progress") if p["input_rows"]]  # noqa: E731
    try:
        assert wait_until(lambda: _data(published, "spark.stream.idle"), spark)
        time.sleep(1.0)  # several more idle triggers (one per 200 ms in these tests): still one idle event
        assert len(_data(published, "spark.stream.idle")) == 1
        _write_files(tmp_path / "in", 1, start=1)
        found = wait_until(lambda: len(with_data()) >= 2, spark)
    finally:
        query.stop()
    assert found, "the batch after the idle period was held back by the one-hour interval"
    assert [p["input_rows"] for p in with_data()] == [10, 10]


def test_stream_into_table_publishes_table_pointer(spark: Any, published: Any, attached: Any, tmp_path: Path) -> None:
    """Batches written into a table sink publish data.table.updated with the table's name and location."""
    attached(progress_interval=3600, tables={"to_table": "spark_catalog.default.stream_sink"})
    _write_files(tmp_path / "in", 2)
    query = (
        _stream(spark, tmp_path / "in")
        .writeStream.queryName("to_table")
        .trigger(availableNow=True)
        .option("checkpointLocation", str(tmp_path / "ck"))
        .toTable("stream_sink")
    )
    query.awaitTermination(120)
    found = wait_until(lambda: _data(published, "data.table.updated"), spark)
    assert found
    assert {t["table"] for t in found} == {"spark_catalog.default.stream_sink"}
    assert found[0]["location"].endswith("stream_sink")
    assert found[-1]["batch_id"] == 1
    assert spark.table("stream_sink").count() == 20


def test_failing_stream_terminates_with_the_error(spark: Any, published: Any, attached: Any, tmp_path: Path) -> None:
    """A query that fails publishes spark.stream.terminated carrying the error and its class."""
    attached()
    _write_files(tmp_path / "in", 1)

    def explode(batch: Any, batch_id: int) -> None:
        raise ValueError("feature job exploded")

    query = (
        _stream(spark, tmp_path / "in")
        .writeStream.foreachBatch(explode)
        .trigger(availableNow=True)
        .option("checkpointLocation", str(tmp_path / "ck"))
        .start()
    )
    with pytest.raises(Exception, match="exploded"):
        query.awaitTermination(120)
    found = wait_until(lambda: _data(published, "spark.stream.terminated"), spark)
    assert "feature job exploded" in found[0]["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nats_down_never_blocks_the_stream(
    spark: Any, attached: Any, tmp_path: Path, namespace: dict[str, str]
) -> None:
    """With NATS down the query runs every batch at full speed; events are delivered once NATS is up."""
    port = _free_port()
    url = f"nats://127.0.0.1:{port}"
    settings = databricks_nats.configure(url=url, spool_dir=str(tmp_path / "spool"), **namespace)
    attached(progress_interval=0)
    _write_files(tmp_path / "in", 4)
    query = (
        _stream(spark, tmp_path / "in")
        .writeStream.format("memory")
        .queryName("outage")
        .trigger(availableNow=True)
        .option("checkpointLocation", str(tmp_path / "ck"))
        .start()
    )
    assert query.awaitTermination(120)
    assert spark.table("outage").count() == 40
    wait_until(lambda: databricks_nats.stats()["emitted"] >= 6, spark)
    assert databricks_nats.stats()["acked"] == 0
    with NatsServer(port=port) as server:
        assert databricks_nats.flush(timeout=30).ok
        types = [m["envelope"]["type"] for m in read_stream(server.url, settings.stream_name)]
    assert types.count("databricks.spark.stream.progress") == 4
    assert types.count("databricks.spark.stream.terminated") == 1


def test_stream_inside_mlflow_run_carries_the_run_id(spark: Any, published: Any, attached: Any, tmp_path: Path) -> None:
    """A query started while an MLflow run is active names that run on its later events (classic clusters)."""
    attached(progress_interval=0)
    _write_files(tmp_path / "in", 3)
    sc = spark.sparkContext
    sc.setLocalProperty("databricks_nats.mlflow_run_id", "run-abc")  # what the MLflow hook sets at start_run
    try:
        query = (
            _stream(spark, tmp_path / "in")
            .writeStream.format("memory")
            .queryName("correlated")
            .trigger(availableNow=True)
            .option("checkpointLocation", str(tmp_path / "ck"))
            .start()
        )
    finally:
        sc.setLocalProperty("databricks_nats.mlflow_run_id", None)
    query.awaitTermination(120)
    terminated = wait_until(lambda: _data(published, "spark.stream.terminated"), spark)
    assert terminated[0]["mlflow_run_id"] == "run-abc"
    assert _data(published, "spark.stream.progress")[-1]["mlflow_run_id"] == "run-abc"
