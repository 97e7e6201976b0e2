"""The Spark-conf source of context detection, on a real local SparkSession with Databricks-style conf."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from databricks_nats.integrations.databricks import apply_context, detect_context
from databricks_nats.integrations.databricks import sdk as dbsdk
from databricks_nats.settings import resolve_settings

CONF = {
    "spark.databricks.workspaceUrl": "dbc-1a2b3c4d-5e6f.cloud.databricks.com",
    "spark.databricks.clusterUsageTags.clusterOwnerOrgId": "2718281828459045",
    "spark.databricks.clusterUsageTags.clusterId": "0303-101010-spark",
    "spark.databricks.clusterUsageTags.clusterName": "ml-training",
    "spark.databricks.clusterUsageTags.sparkVersion": "15.4.x-scala2.12",
}


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """A local[1] SparkSession carrying the conf a Databricks cluster sets (a session of other tests is reused)."""
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    existing = SparkSession.getActiveSession()
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = existing or SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
    for key, value in CONF.items():
        session.conf.set(key, value)
    yield session
    if existing is None:
        session.stop()
    else:
        for key in CONF:
            session.conf.unset(key)


@pytest.fixture(autouse=True)
def _plain(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No Databricks variables, runtime modules or SDK configuration leak in."""
    for name in ("DATABRICKS_RUNTIME_VERSION", "DB_CLUSTER_ID", "DB_CLUSTER_NAME", "DATABRICKS_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delitem(sys.modules, "dbruntime", raising=False)
    dbsdk.set_workspace_client(None)


def test_spark_conf_names_workspace_and_cluster(spark):
    """An active session's spark.databricks.* conf gives workspace URL and id, cluster id/name and runtime."""
    s = resolve_settings(environ={}, spark_conf={})
    ctx = detect_context(s)
    assert ctx.workspace_url == "https://dbc-1a2b3c4d-5e6f.cloud.databricks.com"
    assert (ctx.workspace_id, ctx.cluster_id, ctx.cluster_name) == ("2718281828459045", "0303-101010-spark",
                                                                    "ml-training")  # fmt: skip
    assert ctx.runtime_version == "15.4.x-scala2.12"
    assert ctx.on_databricks
    assert set(dict(ctx.sources).values()) == {"spark_conf"}
    assert apply_context(s, ctx).workspace == "2718281828459045"


def test_repl_context_beats_spark_conf_which_beats_environment(spark, monkeypatch):
    """The REPL context outranks the Spark conf, and the Spark conf outranks DB_CLUSTER_ID."""
    repl = types.ModuleType("dbruntime.databricks_repl_context")
    repl.get_context = lambda: types.SimpleNamespace(clusterId="from-repl")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dbruntime", types.ModuleType("dbruntime"))
    monkeypatch.setitem(sys.modules, "dbruntime.databricks_repl_context", repl)
    monkeypatch.setenv("DB_CLUSTER_ID", "from-env")
    monkeypatch.setenv("DB_CLUSTER_NAME", "env-name")
    ctx = detect_context(resolve_settings(environ={}, spark_conf={}))
    assert ctx.cluster_id == "from-repl"
    assert ctx.cluster_name == "ml-training"
    assert dict(ctx.sources)["cluster_name"] == "spark_conf"
