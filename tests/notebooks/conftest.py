"""Run the bundle's job tasks outside Databricks, as deployed: local Spark, local MLflow, a real nats-server.

``deployed`` fills the bundle's substitutions (``${var.*}``, ``${workspace.*}``, ``${bundle.target}``,
``${resources.*}``, ``{{job.*}}``…) with test values: the synced folder is a temporary directory holding the
target's settings file (the real one, pointed at the test's nats-server), a Unity Catalog volume is a local
folder reached through a qualified ``file://`` URI, the catalog is Spark's own. ``task_parameters`` then
gives a task exactly what the job would: widgets for a notebook task, ``--name=value`` arguments for a
Python file task.

``run_notebook`` splits a notebook at ``# COMMAND ----------``, skips magic-only cells (``%md``) and
executes the rest, in order, in one namespace holding ``spark``, a small stand-in for ``dbutils`` (widgets
only; also set on ``__main__`` as Databricks does, where the library reads job parameters) and ``display``.
Before the first cell the MLflow plugin activates as at ``import mlflow`` in a fresh process on a cluster.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
BUNDLE = ROOT / "bundle" / "databricks.yml"
HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"
TARGET = "dev"


class Widgets:
    """``dbutils.widgets``: declared defaults, overridden by the values a job (here: the test) passes."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.defaults: dict[str, str] = {}

    def text(self, name: str, default: str, label: str | None = None) -> None:
        self.defaults[name] = default

    def dropdown(self, name: str, default: str, choices: list[str], label: str | None = None) -> None:
        self.defaults[name] = default

    def get(self, name: str) -> str:
        if name in self.values:  # a job's parameters are widgets whether the notebook declares them or not
            return self.values[name]
        if name not in self.defaults:
            raise ValueError(f"widget {name!r} was never declared")
        return self.defaults[name]


class DbUtils:
    def __init__(self, widgets: Mapping[str, str]) -> None:
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


def bundle() -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(BUNDLE.read_text())
    return loaded


def job() -> dict[str, Any]:
    jobs = bundle()["resources"]["jobs"]
    assert len(jobs) == 1
    found: dict[str, Any] = next(iter(jobs.values()))
    return found


def task(key: str) -> dict[str, Any]:
    return next(t for t in job()["tasks"] if t["task_key"] == key)


_REFERENCE = re.compile(r"\$\{([^}]+)\}|\{\{\s*([^}]+?)\s*\}\}")


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with every ``${…}`` and ``{{…}}`` reference replaced; an unknown reference fails the test."""

    def one(m: re.Match[str]) -> str:
        key = m.group(1) or m.group(2)
        if key not in values:
            raise KeyError(f"the test has no value for {m.group(0)} (in {text!r})")
        return values[key]

    return _REFERENCE.sub(one, text)


@dataclass
class Deployed:
    """The test values of the bundle's substitutions, and what a task receives from them."""

    values: dict[str, str]
    tmp: Path
    config: Path
    env: str
    run_id: str

    def local(self, value: str) -> str:
        """A volume path as this machine reaches it: a qualified URI under the test's folder."""
        return re.sub(r"^/Volumes/", f"file://{self.tmp}/Volumes/", value)

    def job_parameters(self, task_key: str) -> dict[str, str]:
        values = {**self.values, "task.name": task_key}
        return {p["name"]: fill(str(p["default"]), values) for p in job()["parameters"]}

    def widgets(self, task_key: str) -> dict[str, str]:
        """A notebook task's widgets: the job's parameters and the task's base parameters."""
        params = self.job_parameters(task_key)
        values = {**self.values, "task.name": task_key, **{f"job.parameters.{k}": v for k, v in params.items()}}
        base = task(task_key)["notebook_task"].get("base_parameters", {})
        return {**params, **{k: self.local(fill(str(v), values)) for k, v in base.items()}}

    def argv(self, task_key: str) -> list[str]:
        """A Python file task's arguments."""
        params = self.job_parameters(task_key)
        values = {**self.values, "task.name": task_key, **{f"job.parameters.{k}": v for k, v in params.items()}}
        return [self.local(fill(str(a), values)) for a in task(task_key)["spark_python_task"]["parameters"]]


def write_toml(path: Path, values: Mapping[str, Any]) -> None:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} = {value(v)}\n" for k, v in values.items()))


@pytest.fixture
def deployed(tmp_path: Path, nats_server: Any) -> Deployed:
    """The bundle's ``dev`` target as if deployed: its settings file synced, pointed at the test's server."""
    env = "nb" + uuid.uuid4().hex[:8]
    synced = tmp_path / "workspace-files"
    settings = tomllib.loads((ROOT / "bundle" / "config" / f"{TARGET}.toml").read_text())
    settings.pop("secret_scope", None)  # no Databricks here: the scope part is tested in tests/databricks
    settings.update(url=nats_server.url, env=env, spool_dir=str(tmp_path / "spool"))
    config = synced / "bundle" / "config" / f"{TARGET}.toml"
    write_toml(config, settings)
    volume = bundle()["resources"]["volumes"]["databricks_nats"]
    run_id = str(uuid.uuid4().int % 10**12)
    values = {
        "bundle.target": TARGET,
        "bundle.name": bundle()["bundle"]["name"],
        "workspace.file_path": str(synced),
        "workspace.root_path": str(tmp_path / "bundle-root"),
        "var.catalog": "spark_catalog",  # local Spark's catalog stands in for Unity Catalog
        "var.schema": "default",
        "var.volume": "databricks_nats",
        "workspace.id": "1234567890",
        "job.id": "4242",
        "job.run_id": run_id,
    }
    for field in ("catalog_name", "schema_name", "name"):
        values[f"resources.volumes.databricks_nats.{field}"] = fill(volume[field], values)
    return Deployed(values=values, tmp=tmp_path, config=config, env=env, run_id=run_id)


def run_notebook(name: str, spark: Any, widgets: Mapping[str, str]) -> dict[str, Any]:
    """Execute a notebook's code cells in one namespace and return it (with ``displayed`` DataFrames)."""
    from databricks_nats.integrations.mlflow import plugin

    path = NOTEBOOKS / name
    displayed: list[Any] = []

    def display(df: Any) -> None:
        displayed.append(df.collect() if hasattr(df, "collect") else df)

    dbutils = DbUtils(widgets)
    sys.modules["__main__"].dbutils = dbutils  # type: ignore[attr-defined]  # where Databricks puts it
    plugin._tried = False  # a fresh process on the cluster: the plugin runs at `import mlflow`
    plugin.activate()
    namespace: dict[str, Any] = {"spark": spark, "dbutils": dbutils, "display": display}
    for i, cell in enumerate(cells(path)):
        exec(compile(cell, f"{path}[cell {i}]", "exec"), namespace)  # noqa: S102 - running our own notebooks
    namespace["displayed"] = displayed
    return namespace


@pytest.fixture
def notebook_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private MLflow store and no NATS settings in the environment (they come from the settings file)."""
    import mlflow

    for key in [k for k in os.environ if k.startswith("DATABRICKS_NATS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    yield {"tmp": str(tmp_path), "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    from databricks_nats.integrations import mlflow as nats_mlflow
    from databricks_nats.integrations.mlflow import plugin
    from databricks_nats.integrations.spark import detach_all

    detach_all()  # a notebook may leave its listeners attached, as on a cluster; later tests attach their own
    if hasattr(sys.modules["__main__"], "dbutils"):
        del sys.modules["__main__"].dbutils  # type: ignore[attr-defined]
    plugin._tried = False
    if mlflow.active_run() is not None:
        mlflow.end_run()
    # MLflow's own Spark autologging shuts the py4j callback server down when disabled, which would cut
    # off the Spark listeners of every later test in this process: leave it as the notebook set it
    mlflow.autolog(disable=True, exclude_flavors=["pyspark", "pyspark.ml"])
    nats_mlflow.uninstall()
    mlflow.set_tracking_uri("")
    mlflow.set_registry_uri("")
    from mlflow.tracking import fluent

    fluent._active_experiment_id = None  # the next test's store has no such experiment
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # set_experiment exports it for child processes
