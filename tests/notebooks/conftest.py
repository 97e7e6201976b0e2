"""Run Databricks source-format notebooks outside Databricks: local Spark, local MLflow, a real nats-server.

``run_notebook`` splits the source at ``# COMMAND ----------``, skips magic-only cells (``%md``, ``%pip``:
the package is already installed here) and executes the rest, in order, in one namespace holding
``spark``, a small stand-in for ``dbutils`` (widgets only) and ``display``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"


class Widgets:
    """``dbutils.widgets``: declared defaults, overridden by the values a job (here: the test) passes."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = dict(values)
        self.defaults: dict[str, str] = {}

    def text(self, name: str, default: str, label: str | None = None) -> None:
        self.defaults[name] = default

    def dropdown(self, name: str, default: str, choices: list[str], label: str | None = None) -> None:
        self.defaults[name] = default

    def get(self, name: str) -> str:
        if name not in self.defaults:
            raise ValueError(f"widget {name!r} was never declared")
        return self.values.get(name, self.defaults[name])


class DbUtils:
    def __init__(self, widgets: dict[str, str]) -> None:
        self.widgets = Widgets(widgets)


def cells(path: Path) -> list[str]:
    """The code cells of a notebook, magic-only cells left out."""
    source = path.read_text()
    assert source.splitlines()[0] == HEADER, f"{path.name}: first line must be {HEADER!r}"
    out = []
    for cell in source.split(SEPARATOR):
        lines = [ln for ln in cell.strip().splitlines() if ln.strip()]
        if lines and not all(ln.startswith("# MAGIC") or ln == HEADER for ln in lines):
            out.append(cell)
    return out


def run_notebook(name: str, spark: Any, widgets: dict[str, str]) -> dict[str, Any]:
    """Execute a notebook's code cells in one namespace and return it (with ``displayed`` DataFrames)."""
    path = NOTEBOOKS / name
    displayed: list[Any] = []

    def display(df: Any) -> None:
        displayed.append(df.collect() if hasattr(df, "collect") else df)

    namespace: dict[str, Any] = {"spark": spark, "dbutils": DbUtils(widgets), "display": display}
    for i, cell in enumerate(cells(path)):
        exec(compile(cell, f"{path}[cell {i}]", "exec"), namespace)  # noqa: S102 - running our own notebooks
    namespace["displayed"] = displayed
    return namespace


@pytest.fixture
def notebook_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private MLflow store, spool and environment name for one notebook run."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("DATABRICKS_NATS_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("DATABRICKS_NATS_WORKSPACE", "notebooks")
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    yield {"env": "nb" + uuid.uuid4().hex[:8], "tmp": str(tmp_path)}
    from databricks_nats.integrations import mlflow as nats_mlflow
    from databricks_nats.integrations.spark import detach_all

    detach_all()  # a notebook may leave its listeners attached, as on a cluster; later tests attach their own

    if mlflow.active_run() is not None:
        mlflow.end_run()
    # MLflow's own Spark autologging shuts the py4j callback server down when disabled, which would cut
    # off the Spark listeners of every later test in this process: leave it as the notebook set it
    mlflow.autolog(disable=True, exclude_flavors=["pyspark", "pyspark.ml"])
    nats_mlflow.uninstall()
    mlflow.set_tracking_uri("")
    from mlflow.tracking import fluent

    fluent._active_experiment_id = None  # the next test's store has no such experiment
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # set_experiment exports it for child processes
