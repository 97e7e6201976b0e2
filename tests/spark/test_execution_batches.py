"""Every execution published, in batches: N executions are N events in order, and none is lost at detach or exit.

The job listener hands finished executions to the publisher in batches (``jobs.LINGER``, ``jobs.BATCH_MAX``).
These tests hold a batch back with a long linger and check that settle, detach and interpreter exit each
deliver it, through a real nats-server. The JVM-side filter (one line per event we need) and the Python
read path behind it publish the same events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from databricks_nats import spark as nats_spark
from databricks_nats.integrations.spark import _compat, jobs
from databricks_nats.testing import NatsServer, read_stream
from tests.spark.conftest import fail_a_query, wait_until

N = 7


def _run_actions(spark: Any, tag: str) -> None:
    for i in range(N):
        spark.sparkContext.setJobDescription(f"{tag}-{i}")
        try:
            spark.range(i + 1).collect()
        finally:
            spark.sparkContext.setJobDescription(None)


def _held(spark: Any, attachment: Any, count: int) -> bool:
    """Wait (with a deadline) until the listener holds ``count`` execution events, without publishing them."""
    deadline = time.monotonic() + 60
    while attachment.jobs.tracker.pending() < count and time.monotonic() < deadline:
        _compat.drain_bus(spark, 10)  # the JVM bus only: settle() would publish the batch
        time.sleep(0.05)
    return bool(attachment.jobs.tracker.pending() == count)


def _in_order(events: list[dict[str, Any]], tag: str) -> None:
    assert [e["type"] for e in events] == ["databricks.spark.execution.succeeded"] * N
    assert [e["data"]["description"] for e in events] == [f"{tag}-{i}" for i in range(N)]
    ids = [e["data"]["execution_id"] for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == N


def test_every_execution_is_one_event_in_order(spark: Any, published: Any, attached: Any) -> None:
    """With min_execution_ms=0, N actions give N spark.execution.succeeded events, in the order they ran."""
    attached(min_execution_ms=0)
    _run_actions(spark, "ordered")
    found = wait_until(lambda: len(published("spark.execution")) >= N and published("spark.execution"), spark)
    _in_order(found, "ordered")


def test_the_linger_publishes_a_batch_without_settle(
    spark: Any, published: Any, attached: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pending batch is published when its linger is over, with nobody draining the listener."""
    monkeypatch.setattr(jobs, "LINGER", 0.2)
    attached(min_execution_ms=0)
    _run_actions(spark, "linger")
    deadline = time.monotonic() + 60
    while len(found := published("spark.execution")) < N and time.monotonic() < deadline:
        time.sleep(0.1)
    _in_order(found, "linger")


def test_a_pending_batch_is_published_at_detach(spark: Any, published: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Executions held in a batch (a linger of an hour) reach the stream when the listeners are detached."""
    monkeypatch.setattr(jobs, "LINGER", 3600.0)
    attachment = nats_spark.attach(spark, min_execution_ms=0)
    try:
        _run_actions(spark, "detach")
        assert _held(spark, attachment, N)
        assert published("spark.execution") == []  # held back, not lost: the next line delivers them
    finally:
        nats_spark.detach(spark)
    _in_order(published("spark.execution"), "detach")


def test_summary_follows_the_executions_before_it(spark: Any, published: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed execution (always published) still pending when the summary is flushed is published first."""
    monkeypatch.setattr(jobs, "LINGER", 3600.0)
    attachment = nats_spark.attach(spark, min_execution_ms=10_000_000, summary_interval=3600)
    try:
        spark.range(3).collect()
        fail_a_query(spark)
        assert _held(spark, attachment, 1)
    finally:
        nats_spark.detach(spark)
    types = [e["type"] for e in published("spark.execution")]
    assert types == ["databricks.spark.execution.failed", "databricks.spark.execution.summary"]


_CHILD = textwrap.dedent(
    """
    import atexit, json, os, sys, time
    from pyspark.sql import SparkSession
    import databricks_nats
    from databricks_nats import spark as nats_spark
    from databricks_nats.integrations.spark import _compat, detach_all, jobs

    args = json.loads(sys.argv[1])
    settings = databricks_nats.configure(
        url=args["url"], spool_dir=args["spool"], workspace=args["workspace"], env="test"
    )
    print("stream", settings.stream_name, flush=True)
    spark = (
        SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
        .config("spark.sql.warehouse.dir", args["warehouse"]).getOrCreate()
    )
    jobs.LINGER = 3600.0
    attachment = nats_spark.attach(spark, min_execution_ms=0)
    if args["without_detach_all"]:
        atexit.unregister(detach_all)  # only the library's exit hook is left to publish the batch
    for i in range(args["n"]):
        spark.sparkContext.setJobDescription(f"exit-{i}")
        spark.range(i + 1).collect()
    deadline = time.monotonic() + 60
    while attachment.jobs.tracker.pending() < args["n"] and time.monotonic() < deadline:
        _compat.drain_bus(spark, 10)
        time.sleep(0.05)
    print("held", attachment.jobs.tracker.pending(), flush=True)
    # exit without detach, flush or shutdown
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("without_detach_all", [False, True], ids=["exit", "exit-hook-only"])
def test_a_pending_batch_is_published_at_process_exit(
    nats_server: NatsServer, namespace: dict[str, str], tmp_path: Path, without_detach_all: bool
) -> None:
    """A process that runs actions and exits without detaching still delivers every held execution, in order."""
    args = {
        "url": nats_server.url,
        "spool": str(tmp_path / "spool"),
        "warehouse": str(tmp_path / "warehouse"),
        "workspace": namespace["workspace"],
        "n": N,
        "without_detach_all": without_detach_all,
    }
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "DATABRICKS_NATS_DETECT_CONTEXT": "false"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"held {N}" in proc.stdout, proc.stderr[-3000:]
    stream = proc.stdout.split("stream ", 1)[1].split()[0]
    events = [m["envelope"] for m in read_stream(nats_server.url, stream)]
    _in_order([e for e in events if e["type"].startswith("databricks.spark.execution")], "exit")


def _record_lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the JVM filter sends to listeners attached from now on, one string per callback."""
    lines: list[str] = []
    on_line = jobs.JobListener.onLine

    def record(self: jobs.JobListener, line: str) -> None:
        lines.append(line)
        on_line(self, line)

    monkeypatch.setattr(jobs.JobListener, "onLine", record)
    return lines


def _comparable(event: dict[str, Any]) -> tuple[Any, ...]:
    d = event["data"]
    return (event["type"], d["kind"], d["description"], d["job_group"], d["jobs"], d["stages"], d["error_class"])


def _workload(spark: Any) -> None:
    spark.sparkContext.setJobGroup("group-a", "grouped")
    try:
        spark.range(100).selectExpr("id % 3 AS k").groupBy("k").count().collect()
    finally:
        spark.sparkContext.setJobGroup("", "")
    assert spark.sparkContext.parallelize(range(10), 2).sum() == 45
    spark.sparkContext.setJobDescription("described")
    try:
        spark.range(5).collect()
    finally:
        spark.sparkContext.setJobDescription(None)
    fail_a_query(spark)


def test_the_jvm_filter_and_the_python_reads_publish_the_same(
    spark: Any, published: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same actions give the same execution events whether the JVM filter or Python reads the fields."""
    lines = _record_lines(monkeypatch)
    runs = []
    for filtered in (True, False):
        if not filtered:
            monkeypatch.setattr(_compat, "_jvm_filter", lambda gateway, out: None)
        before = len(published("spark.execution"))
        nats_spark.attach(spark, min_execution_ms=0)
        try:
            _workload(spark)
            nats_spark.settle(spark)
        finally:
            nats_spark.detach(spark)
        runs.append([_comparable(e) for e in published("spark.execution")[before:]])
        if filtered:
            assert lines, "the JVM filter was not used"
            heard = len(lines)
    assert len(lines) == heard  # the second run read the events in Python
    assert len(runs[0]) == 4
    assert runs[0] == runs[1]
    assert [r[2] for r in runs[0]][2] == "described"
    assert {r[0] for r in runs[0]} == {"databricks.spark.execution.succeeded", "databricks.spark.execution.failed"}


def test_the_jvm_filter_sends_only_what_is_published(
    spark: Any, published: Any, attached: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An execution reaches Python as one callback at its end: its start, its jobs' starts and its end; no AQE or
    metric updates, no job ends (only an RDD action's)."""
    callbacks = _record_lines(monkeypatch)
    attached(min_execution_ms=0)
    spark.range(1000, numPartitions=4).selectExpr("id % 7 AS k").groupBy("k").count().collect()
    nats_spark.settle(spark)
    assert len(callbacks) == 1
    kinds = [line[0] for line in callbacks[0].split("\u0002")]
    assert kinds[0] == "S"
    assert kinds[-1] == "F"
    assert set(kinds[1:-1]) == {"J"}
    callbacks.clear()
    spark.sparkContext.parallelize(range(10), 2).count()
    nats_spark.settle(spark)
    assert [[line[0] for line in text.split("\u0002")] for text in callbacks] == [["J", "E"]]
    assert len(wait_until(lambda: _executions_of(published), spark)) == 2


def _executions_of(published: Any) -> list[dict[str, Any]]:
    return list(published("spark.execution"))
