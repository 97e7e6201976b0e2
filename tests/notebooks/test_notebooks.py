"""The bundle's job tasks run end to end outside Databricks, as deployed, and publish what they promise.

Every task gets what the job gives it (``conftest.Deployed``): its widgets or arguments from
bundle/databricks.yml with the substitutions filled in, and the settings only from the target's settings
file (no ``DATABRICKS_NATS_*`` variable, no ``configure()`` call).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from databricks_nats.testing import NatsServer, read_stream
from tests.notebooks.conftest import NOTEBOOKS, DbUtils, Deployed, cells, job, run_notebook, task


def _events(server: NatsServer, stream: str) -> list[tuple[str, dict[str, Any]]]:
    envs = [m["envelope"] for m in read_stream(server.url, stream)]
    return [(e["type"].removeprefix("databricks."), e["data"]) for e in envs]


def _published(server: NatsServer, ns: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return _events(server, ns["databricks_nats"].get_settings().stream_name)


def test_notebooks_are_source_format_and_the_quickstart_a_python_file() -> None:
    """Three notebooks in Databricks source format; the quickstart a plain Python file (a job task on both
    classic and serverless compute: the bundle CLI refuses a notebook as a Python file task)."""
    names = sorted(p.name for p in NOTEBOOKS.glob("*.py"))
    assert names == ["consumer.py", "quickstart.py", "registry.py", "streaming.py"]
    for name in ("consumer.py", "registry.py", "streaming.py"):
        assert len(cells(NOTEBOOKS / name)) >= 3
    quickstart = (NOTEBOOKS / "quickstart.py").read_text()
    assert not quickstart.startswith("# Databricks notebook source")
    ast.parse(quickstart)


def test_nothing_is_installed_from_an_index() -> None:
    """No notebook installs databricks-nats by name (it is on no index): every task gets the wheel the bundle
    built, as a task library (classic) or an environment dependency (serverless)."""
    for path in NOTEBOOKS.glob("*.py"):
        text = path.read_text()
        assert "%pip" not in text, path.name
        assert "pip install" not in text, path.name
    for t in job()["tasks"]:
        libraries = [lib.get("whl") for lib in t.get("libraries", [])]
        environment = [e for e in job()["environments"] if e["environment_key"] == t.get("environment_key")]
        wheels = libraries + [d for e in environment for d in e["spec"]["dependencies"] if d.endswith(".whl")]
        assert wheels == ["../dist/*.whl"], t["task_key"]


def test_widget_defaults_are_empty_and_nothing_configures_publishing() -> None:
    """Widget defaults never override the bundle's settings, and no notebook passes settings to configure()."""
    for name in ("consumer.py", "registry.py", "streaming.py"):
        dbutils = DbUtils({})
        declared = cells(NOTEBOOKS / name)[0]
        exec(compile(declared, name, "exec"), {"dbutils": dbutils})  # noqa: S102 - the widget cell only
        assert dbutils.widgets.defaults, name
        assert set(dbutils.widgets.defaults.values()) == {""}, name
    for path in NOTEBOOKS.glob("*.py"):
        assert "configure(" not in path.read_text(), path.name


def test_quickstart_runs_as_the_python_task_of_both_computes(nats_server: NatsServer, deployed: Deployed) -> None:
    """The serverless task's command: a fresh interpreter, no DATABRICKS_NATS_* variable, only the task's
    ``--name=value`` arguments (settings file, job context, experiment); the hook activates at import mlflow."""
    assert task("quickstart")["spark_python_task"] == task("quickstart_serverless")["spark_python_task"]
    argv = deployed.argv("quickstart_serverless")
    assert f"--nats_config={deployed.config}" in argv
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_NATS_", "MLFLOW_", "SPARK_"))}
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{deployed.tmp}/mlflow.db",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        PYSPARK_SUBMIT_ARGS="--master local[2] --conf spark.ui.enabled=false "
        "--conf spark.sql.shuffle.partitions=2 pyspark-shell",
    )
    done = subprocess.run(
        [sys.executable, str(NOTEBOOKS / "quickstart.py"), *argv],
        cwd=deployed.tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"publishing to dbx.1234567890.{deployed.env}" in done.stdout
    from databricks_nats.settings import resolve_settings

    stream = resolve_settings(environ={}, spark_conf={}, env=deployed.env, workspace="1234567890").stream_name
    published = _events(nats_server, stream)
    kinds = {t for t, _ in published}
    assert {"mlflow.run.started", "mlflow.run.finished", "mlflow.run.metrics"} <= kinds
    run_id = next(d["run_id"] for t, d in published if t == "mlflow.run.finished")
    spark_runs = [d.get("mlflow_run_ids") or [d.get("mlflow_run_id")] for t, d in published if t.startswith("spark.")]
    assert [run_id] in spark_runs
    contexts = [d["context"] for _, d in published]
    assert {c.get("job_run_id") for c in contexts} == {deployed.run_id}
    assert {c.get("task_key") for c in contexts} == {"quickstart_serverless"}


def test_streaming(spark: Any, nats_server: NatsServer, deployed: Deployed, notebook_env: dict[str, str]) -> None:
    """The streaming task writes its input with Spark at a qualified URI (a volume on Databricks, never the
    driver's disk), and the query announces its lifecycle and a pointer to the table it wrote."""
    widgets = deployed.widgets("streaming")
    assert widgets["input_dir"].startswith(f"file://{deployed.tmp}/Volumes/spark_catalog/default/databricks_nats/")
    spark.sql(f"DROP TABLE IF EXISTS {widgets['table']}")
    ns = run_notebook("streaming.py", spark, widgets)
    published = _published(nats_server, ns)
    assert ns["databricks_nats"].get_settings().env == deployed.env  # from the settings file
    kinds = [t for t, _ in published]
    assert kinds.count("spark.stream.started") == 1
    assert kinds.count("spark.stream.terminated") == 1
    tables = [d for t, d in published if t == "data.table.updated"]
    assert tables
    assert {d["table"] for d in tables} == {widgets["table"]}
    assert spark.table(widgets["table"]).count() == 300
    input_dir = Path(widgets["input_dir"].removeprefix("file://")) / "input"
    assert len(list(input_dir.glob("part-*.json"))) == 3
    shown = ns["displayed"][0]
    assert {r["type"] for r in shown} >= {"spark.stream.started", "spark.stream.terminated"}


def test_registry_then_consumer(
    spark: Any, nats_server: NatsServer, deployed: Deployed, notebook_env: dict[str, str]
) -> None:
    """The registry task registers a model with a signature under the job's three-level name and reacts to
    its own alias event (the hook active from the settings file alone); the consumer task finds the version."""
    import mlflow

    widgets = deployed.widgets("registry")
    assert widgets["model_name"] == "spark_catalog.default.nats_demo_model"
    assert widgets["registry_uri"] == "databricks-uc"
    widgets["registry_uri"] = notebook_env["tracking_uri"]  # Unity Catalog is Databricks only: the local store
    registry = run_notebook("registry.py", spark, widgets)
    assert registry["event"].data["alias"] == "champion"
    assert registry["event"].data["version"] == str(registry["version"])
    model = mlflow.models.get_model_info(f"models:/{widgets['model_name']}/{registry['version']}")
    assert model.signature is not None  # what Unity Catalog requires
    assert model.signature.inputs.input_names()[:2] == ["sepal length (cm)", "sepal width (cm)"]
    consumer = run_notebook("consumer.py", spark, deployed.widgets("consumer"))
    assert consumer["created"].data["name"] == widgets["model_name"]
    assert consumer["created"].data["version"] == str(registry["version"])
    assert "mlflow.model.alias_set" in {e.type for e in consumer["tailed"]}
