"""The notebooks in notebooks/ run end to end outside Databricks and publish what they promise."""

from __future__ import annotations

from typing import Any

from databricks_nats.testing import NatsServer, read_stream
from tests.notebooks.conftest import NOTEBOOKS, cells, run_notebook


def _types(server: NatsServer, ns: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    envs = [m["envelope"] for m in read_stream(server.url, ns["databricks_nats"].get_settings().stream_name)]
    return [(e["type"].removeprefix("databricks."), e["data"]) for e in envs]


def test_every_notebook_is_in_source_format() -> None:
    """Each notebook starts with the Databricks header, has several cells and installs the package."""
    names = sorted(p.name for p in NOTEBOOKS.glob("*.py"))
    assert names == ["consumer.py", "quickstart.py", "registry.py", "streaming.py"]
    for name in names:
        text = (NOTEBOOKS / name).read_text()
        assert "# MAGIC %pip install databricks-nats" in text
        assert len(cells(NOTEBOOKS / name)) >= 3


def test_quickstart(spark: Any, nats_server: NatsServer, notebook_env: dict[str, str]) -> None:
    """The quickstart trains a model under autologging and shows the run, model and Spark events it published."""
    ns = run_notebook("quickstart.py", spark, {"nats_url": nats_server.url, "env": notebook_env["env"]})
    run_id = ns["run"].info.run_id
    published = _types(nats_server, ns)
    kinds = {t for t, _ in published}
    assert {"mlflow.run.started", "mlflow.run.finished", "mlflow.run.metrics"} <= kinds
    spark_runs = [d.get("mlflow_run_ids") or [d.get("mlflow_run_id")] for t, d in published if t.startswith("spark.")]
    assert [run_id] in spark_runs
    finished = [d for t, d in published if t == "mlflow.run.finished"]
    assert finished[0]["run_id"] == run_id
    shown = ns["displayed"][0]
    assert len(shown) >= 3
    assert {r["type"] for r in shown} <= kinds


def test_streaming(spark: Any, nats_server: NatsServer, notebook_env: dict[str, str]) -> None:
    """The streaming notebook's query announces its lifecycle and a pointer to the table it wrote."""
    widgets = {
        "nats_url": nats_server.url,
        "env": notebook_env["env"],
        "input_dir": notebook_env["tmp"] + "/input",
        "table": "nb_features_" + notebook_env["env"],
    }
    ns = run_notebook("streaming.py", spark, widgets)
    published = _types(nats_server, ns)
    kinds = [t for t, _ in published]
    assert kinds.count("spark.stream.started") == 1
    assert kinds.count("spark.stream.terminated") == 1
    tables = [d for t, d in published if t == "data.table.updated"]
    assert tables
    assert {d["table"] for d in tables} == {widgets["table"]}
    assert spark.table(widgets["table"]).count() == 300


def test_registry_then_consumer(spark: Any, nats_server: NatsServer, notebook_env: dict[str, str]) -> None:
    """The registry notebook reacts to its own alias event; the consumer notebook tails and finds the version."""
    widgets = {"nats_url": nats_server.url, "env": notebook_env["env"], "model_name": "nb_model"}
    registry = run_notebook("registry.py", spark, widgets)
    assert registry["event"].data["alias"] == "champion"
    assert registry["event"].data["version"] == str(registry["version"])
    consumer = run_notebook("consumer.py", spark, {**widgets, "version": str(registry["version"])})
    assert consumer["created"].data["name"] == "nb_model"
    assert "mlflow.model.alias_set" in {e.type for e in consumer["tailed"]}
