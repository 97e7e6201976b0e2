"""The job listener: one event per SQL execution or action, bounded volume, correlation, attach/detach."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from databricks_nats import spark as nats_spark
from databricks_nats.integrations.spark import _compat
from tests.spark.conftest import fail_a_query, wait_until


def _executions(published: Any, action: str = "") -> list[dict[str, Any]]:
    return [e["data"] for e in published("spark.execution." + action)]


def test_successful_action_publishes_one_execution_event(spark: Any, published: Any, attached: Any) -> None:
    """A DataFrame action becomes one spark.execution.succeeded event naming its jobs, stages and duration."""
    attached(min_execution_ms=0)
    spark.sparkContext.setJobGroup("nightly-features", "aggregate")
    try:
        rows = spark.range(1000).selectExpr("id % 3 AS k").groupBy("k").count().collect()
    finally:
        spark.sparkContext.setJobGroup("", "")
    assert len(rows) == 3
    found = wait_until(lambda: _executions(published, "succeeded"), spark)
    assert len(found) == 1, found
    event = found[0]
    assert event["kind"] == "sql"
    assert event["app_id"] == spark.sparkContext.applicationId
    assert event["jobs"] >= 1
    assert event["stages"] >= 1
    assert event["job_group"] == "nightly-features"
    assert event["duration_ms"] >= 0
    assert event["error"] is None


def test_failed_action_publishes_error_and_class(spark: Any, published: Any, attached: Any) -> None:
    """An action that fails is always published, with Spark's error message and error class."""
    attached(min_execution_ms=10_000_000)
    fail_a_query(spark, 10)
    found = wait_until(lambda: _executions(published, "failed"), spark)
    assert len(found) == 1
    assert "by zero" in found[0]["error"]
    assert found[0]["error_class"] == "DIVIDE_BY_ZERO"
    assert _executions(published, "succeeded") == []


def test_rdd_action_is_published_as_a_job(spark: Any, published: Any, attached: Any) -> None:
    """An RDD action (no SQL execution) is published as an execution of kind 'job'."""
    attached(min_execution_ms=0)
    assert spark.sparkContext.parallelize(range(100), 2).map(lambda x: x * 2).sum() == 9900
    found = wait_until(lambda: _executions(published, "succeeded"), spark)
    assert [e["kind"] for e in found] == ["job"]
    assert found[0]["execution_id"] is None
    assert found[0]["jobs"] == 1


def test_short_executions_are_counted_into_one_summary(spark: Any, published: Any, attached: Any) -> None:
    """Executions shorter than the threshold produce no event each, only one summary counting them all."""
    attached(min_execution_ms=10_000_000, summary_interval=3600)
    for _ in range(5):
        spark.range(10).count()
    nats_spark.settle(spark)
    assert _executions(published) == []
    nats_spark.detach(spark)  # publishes the pending summary
    summaries = _executions(published, "summary")
    assert len(summaries) == 1
    assert summaries[0]["executions"] == 5
    assert summaries[0]["jobs"] >= 5


def test_attach_twice_never_double_publishes_and_detach_stops(spark: Any, published: Any) -> None:
    """Attaching twice keeps one set of listeners; after detach nothing is published; attach works again."""
    first = nats_spark.attach(spark, min_execution_ms=0)
    assert nats_spark.attach(spark, min_execution_ms=0) is first
    spark.range(5).collect()
    assert len(wait_until(lambda: _executions(published), spark)) == 1
    nats_spark.detach(spark)
    assert nats_spark.attached(spark) is None
    spark.range(6).collect()
    nats_spark.detach(spark)  # detaching what is not attached is a no-op
    nats_spark.attach(spark, min_execution_ms=0)
    try:
        spark.range(7).collect()
        assert len(wait_until(lambda: len(_executions(published)) >= 2 and _executions(published), spark)) == 2
    finally:
        nats_spark.detach(spark)


def test_mlflow_run_id_set_by_the_hook_is_carried(spark: Any, published: Any, attached: Any, tmp_path: Any) -> None:
    """Spark work done inside an MLflow run carries that run's id (the hook sets a Spark local property)."""
    import mlflow

    from databricks_nats.integrations import mlflow as nats_mlflow

    attached(min_execution_ms=0)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    nats_mlflow.install()
    try:
        experiment = mlflow.create_experiment("spark-correlation")  # no global active experiment from other tests
        with mlflow.start_run(experiment_id=experiment) as run:
            assert _compat.local_run_id(spark) == run.info.run_id
            spark.range(100).selectExpr("sum(id)").collect()
        assert _compat.local_run_id(spark) is None
    finally:
        nats_mlflow.uninstall()
        mlflow.set_tracking_uri("")
    found = wait_until(lambda: _executions(published, "succeeded"), spark)
    assert [e["mlflow_run_id"] for e in found] == [run.info.run_id]


class _ConnectLike:
    """A session as Spark Connect presents it: no py4j gateway, the same streaming and conf APIs."""

    def __init__(self, real: Any) -> None:
        self.streams = real.streams
        self.conf = real.conf
        self.session_id = "connect-session"


def test_connect_session_skips_the_job_listener(spark: Any, published: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Without a JVM (Spark Connect) attach registers only the streaming listener and says so once."""
    session = _ConnectLike(spark)
    with caplog.at_level(logging.INFO, logger="databricks_nats.spark"):
        found = nats_spark.attach(session)
    try:
        assert found.jobs is None
        assert found.streaming is not None
        assert sum("Spark Connect" in r.getMessage() for r in caplog.records) == 1
        spark.range(3).collect()
        nats_spark.settle(spark)
        assert _executions(published) == []
    finally:
        nats_spark.detach(session)


def test_volume_policy_comes_from_spark_conf(spark: Any, nats_server: Any, namespace: Any, tmp_path: Any) -> None:
    """A cluster-wide Spark conf setting (spark.databricks_nats.spark_min_execution_ms) sets attach's policy."""
    import databricks_nats
    from databricks_nats.testing import read_stream

    spark.conf.set("spark.databricks_nats.spark_min_execution_ms", "0")
    try:
        settings = databricks_nats.configure(url=nats_server.url, spool_dir=str(tmp_path / "spool"), **namespace)
        assert settings.spark_min_execution_ms == 0
        nats_spark.attach(spark)
        spark.range(4).collect()
        nats_spark.settle(spark)
        nats_spark.detach(spark)
    finally:
        spark.conf.unset("spark.databricks_nats.spark_min_execution_ms")
    databricks_nats.flush(timeout=10)
    types = [m["envelope"]["type"] for m in read_stream(nats_server.url, settings.stream_name)]
    assert types == ["databricks.spark.execution.succeeded"]


def test_task_and_stage_events_never_cross_into_python(
    spark: Any, published: Any, attached: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JVM filters the listener bus: only job and SQL events reach Python, never one per task or stage."""
    from databricks_nats.integrations.spark import jobs

    heard: list[Any] = []
    monkeypatch.setattr(jobs, "_ignore", lambda *args: heard.append(args))
    attachment = attached(min_execution_ms=0)
    handlers = [spark._jvm.java.lang.reflect.Proxy.getInvocationHandler(p) for p in _compat_proxies(attachment)]
    assert sorted(str(h.getListenerMethodName()) for h in handlers) == ["onJobEnd", "onJobStart", "onOtherEvent"]
    spark.range(1000, numPartitions=4).selectExpr("id % 7 AS k").groupBy("k").count().collect()
    assert len(wait_until(lambda: _executions(published, "succeeded"), spark)) == 1
    assert heard == []


def test_without_java_beans_one_listener_hears_everything(
    spark: Any, published: Any, attached: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a JVM without java.beans (no JDK EventHandler) the listener is registered whole and still publishes."""
    from databricks_nats.integrations.spark import jobs

    def no_beans(self: Any) -> dict[str, Any]:
        raise RuntimeError("java.beans.EventHandler is not available")

    monkeypatch.setattr(jobs.JobListener, "taps", no_beans)
    attachment = attached(min_execution_ms=0)
    assert len(_compat_proxies(attachment)) == 1
    spark.range(100, numPartitions=2).selectExpr("id % 3 AS k").groupBy("k").count().collect()
    found = wait_until(lambda: _executions(published, "succeeded"), spark)
    assert [e["kind"] for e in found] == ["sql"]


def _compat_proxies(attachment: Any) -> list[Any]:
    from databricks_nats.integrations.spark import _jobs

    hooks = [h for h in _jobs.values() if h.listener is attachment.jobs]
    assert len(hooks) == 1
    return list(hooks[0].proxies)


def test_shutting_down_the_callback_server_never_hangs(spark: Any, published: Any, attached: Any) -> None:
    """After job events crossed into Python, a callback-server shutdown (MLflow does one in spark.stop()) returns."""
    import threading

    attached(min_execution_ms=0)
    spark.range(10).collect()
    assert wait_until(lambda: _executions(published, "succeeded"), spark)
    done = threading.Event()
    stopper = threading.Thread(
        target=lambda: (spark.sparkContext._gateway.shutdown_callback_server(), done.set()), daemon=True
    )
    stopper.start()
    assert done.wait(30), "shutdown_callback_server() hung on a connection blocked in readline"
    nats_spark.detach(spark)
    attached(min_execution_ms=0)  # a fresh callback server: events flow again
    spark.range(11).collect()
    assert len(wait_until(lambda: len(_executions(published, "succeeded")) >= 2 and _executions(published), spark)) == 2
