"""Parity: the same MLflow workflows with the hook off and on give the same results, the same exceptions (type and
message) and the same stored data (runs' params, metrics and tags, artifact listings, registry state), ids and
times aside. Each workflow runs twice, each time in a fresh sqlite store: first without the hook, then with it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from databricks_nats.integrations import mlflow as nats_mlflow

MLFLOW_3 = int(mlflow.__version__.split(".")[0]) >= 3
_ID = re.compile(r"\b(m-)?[0-9a-f]{32}\b")
_TIME = re.compile(r"\b1[6-9]\d{11}\b")  # epoch milliseconds
_VOLATILE_TAGS = {"mlflow.log-model.history"}  # JSON with ids and times


def _norm(value: Any, root: str = "\0") -> Any:
    """Ids, epoch-millisecond times and the store's directory replaced by placeholders, recursively."""
    if isinstance(value, str):
        return _TIME.sub("<time>", _ID.sub("<id>", value.replace(root, "<root>")))
    if isinstance(value, dict):
        return {_norm(k, root): _norm(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_norm(v, root) for v in value]
    return value


def _error(call: Callable[[], Any]) -> tuple[str, str] | None:
    try:
        call()
    except Exception as e:
        return type(e).__name__, _norm(str(e))
    return None


def _listing(client: MlflowClient, run_id: str, path: str | None = None) -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    for f in client.list_artifacts(run_id, path):
        if f.is_dir:
            out += _listing(client, run_id, f.path)
        elif not f.path.endswith(("MLmodel", ".yaml", ".txt")) or "model" not in f.path:  # model files embed ids
            out.append((f.path, f.file_size))
        else:
            out.append((f.path, None))
    return out


def _runs(experiment_ids: list[str]) -> list[Any]:
    client = MlflowClient()
    found = client.search_runs(experiment_ids, run_view_type=3, order_by=["attributes.run_name ASC"])
    out = []
    for run in found:
        tags = {k: v for k, v in run.data.tags.items() if k not in _VOLATILE_TAGS}
        history = {
            k: [(m.value, m.step) for m in client.get_metric_history(run.info.run_id, k)] for k in run.data.metrics
        }
        out.append(
            {
                "name": run.info.run_name,
                "status": run.info.status,
                "stage": run.info.lifecycle_stage,
                "params": run.data.params,
                "metrics": run.data.metrics,
                "history": {k: sorted(v, key=lambda p: p[1]) for k, v in history.items()},
                "tags": tags,
                "artifacts": _listing(client, run.info.run_id),
            }
        )
    return _norm(out)


@pytest.fixture
def both(mlflow_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: Any) -> Any:
    """``both(workflow)``: the workflow's normalised outcome without the hook, then with it (and its events)."""

    def run(workflow: Callable[[Path, str], Any]) -> tuple[Any, Any, Any]:
        outcomes: list[Any] = []
        events: Any = None
        for label in ("off", "on"):
            root = tmp_path / label
            root.mkdir()
            shutil.copyfile(mlflow_template, root / "mlflow.db")
            monkeypatch.chdir(root)
            mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
            experiment_id = mlflow.set_experiment("parity").experiment_id
            if label == "on":
                events = record()
            else:
                assert not nats_mlflow.installed()
            outcomes.append(_norm(workflow(root, experiment_id), str(root)))
            while mlflow.active_run() is not None:
                mlflow.end_run()
        hook = nats_mlflow.current_hook()
        assert hook is not None
        assert hook.settle(30)
        return outcomes[0], outcomes[1], events

    return run


def test_fluent_api(both):
    def workflow(root: Path, experiment_id: str) -> Any:
        out: dict[str, Any] = {}
        with mlflow.start_run(run_name="parent") as parent:
            mlflow.log_param("lr", "0.1")
            mlflow.log_params({"a": 1, "b": "x"})
            mlflow.log_metric("loss", 0.5, step=0)
            mlflow.log_metrics({"loss": 0.25, "acc": 0.9}, step=1)
            mlflow.set_tag("team", "ml")
            mlflow.set_tags({"k": "v"})
            mlflow.log_text("hello", "notes/a.txt")
            mlflow.log_dict({"x": 1}, "cfg.json")
            with mlflow.start_run(run_name="child", nested=True) as child:
                mlflow.log_metric("m", 1.0)
                out["child_parent"] = child.data.tags.get("mlflow.parentRunId") == parent.info.run_id
            out["changed_param"] = _error(lambda: mlflow.log_param("lr", "0.2"))
            out["active"] = mlflow.active_run().info.run_name
        out["missing_run"] = _error(lambda: mlflow.get_run("0" * 32))
        with mlflow.start_run(run_id=parent.info.run_id):  # resumed
            mlflow.log_metric("loss", 0.125, step=2)
        try:
            with mlflow.start_run(run_name="failing"):
                raise ValueError("training broke")
        except ValueError as e:
            out["raised"] = str(e)
        out["runs"] = _runs([experiment_id])
        return out

    off, on, events = both(workflow)
    assert on == off
    assert len(events.of_type("mlflow.run.started")) == 3  # parent, child, failing; the resume was seen start
    assert len(events.of_type("mlflow.run.failed")) == 1


def test_client_api(both):
    def workflow(root: Path, experiment_id: str) -> Any:
        from mlflow.entities import Metric, Param, RunTag

        client = MlflowClient()
        out: dict[str, Any] = {}
        exp = client.create_experiment("other", tags={"t": "1"})
        out["duplicate"] = _error(lambda: client.create_experiment("other"))
        run = client.create_run(exp, run_name="batch", tags={"team": "ml"})
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("loss", 1.0 / (i + 1), 1_700_000_000_000 + i, i) for i in range(20)],
            params=[Param("p", "1")],
            tags=[RunTag("t", "x")],
        )
        client.log_metric(run.info.run_id, "acc", 0.5, step=3)
        client.set_terminated(run.info.run_id, "KILLED")
        client.update_run(run.info.run_id, name="batch-renamed")
        out["bad_status"] = _error(lambda: client.set_terminated(run.info.run_id, "NOPE"))
        out["search"] = [r.info.run_name for r in client.search_runs([exp], "metrics.acc > 0.1")]
        client.delete_run(run.info.run_id)
        out["deleted_search"] = len(client.search_runs([exp]))
        client.restore_run(run.info.run_id)
        client.rename_experiment(exp, "other-renamed")
        client.delete_experiment(exp)
        out["deleted_experiment"] = client.get_experiment(exp).lifecycle_stage
        client.restore_experiment(exp)
        out["experiment"] = [client.get_experiment(exp).name, client.get_experiment(exp).tags.get("t")]
        out["runs"] = _runs([exp])
        return out

    off, on, events = both(workflow)
    assert on == off
    types = {e.type for e in events}
    assert {"mlflow.run.killed", "mlflow.run.deleted", "mlflow.experiment.renamed"} <= types


def test_registry(both):
    def workflow(root: Path, experiment_id: str) -> Any:
        client = MlflowClient()
        out: dict[str, Any] = {}
        with mlflow.start_run(run_name="trained") as run:
            mlflow.log_text("weights", "model/weights.txt")
        source = f"runs:/{run.info.run_id}/model"
        client.create_registered_model("churn", tags={"owner": "ml"}, description="d")
        mv = client.create_model_version("churn", source, run.info.run_id, tags={"v": "1"})
        mv2 = client.create_model_version("churn", "file:///models/churn")
        client.set_registered_model_alias("churn", "champion", mv.version)
        client.set_registered_model_tag("churn", "team", "ml")
        client.set_model_version_tag("churn", mv2.version, "validated", "yes")
        client.delete_model_version_tag("churn", mv.version, "v")
        client.update_registered_model("churn", description="d2")
        out["stage"] = client.transition_model_version_stage("churn", mv2.version, "Staging").current_stage
        out["by_alias"] = client.get_model_version_by_alias("churn", "champion").version
        out["missing_model"] = _error(lambda: client.get_registered_model("nope"))
        out["missing_alias"] = _error(lambda: client.get_model_version_by_alias("churn", "nope"))
        client.delete_registered_model_alias("churn", "champion")
        client.rename_registered_model("churn", "churn2")
        model = client.get_registered_model("churn2")
        out["model"] = [model.name, model.description, model.tags, model.aliases]
        out["versions"] = [
            [v.version, v.current_stage, v.tags, v.source, v.run_id, v.status]
            for v in client.search_model_versions("name='churn2'", order_by=["version_number ASC"])
        ]
        client.delete_model_version("churn2", mv.version)
        out["left"] = [v.version for v in client.search_model_versions("name='churn2'")]
        client.delete_registered_model("churn2")
        out["gone"] = _error(lambda: client.get_registered_model("churn2"))
        return out

    off, on, events = both(workflow)
    assert on == off
    assert events.of_type("mlflow.model.version_created")


def test_artifacts_up_and_down(both):
    def workflow(root: Path, experiment_id: str) -> Any:
        client = MlflowClient()
        out: dict[str, Any] = {}
        tree = root / "tree"
        (tree / "sub").mkdir(parents=True)
        for i in range(5):
            (tree / f"f{i}.txt").write_text("x" * i)
        (tree / "sub" / "deep.bin").write_bytes(b"\0" * 100)
        with mlflow.start_run(run_name="files") as run:
            mlflow.log_artifacts(str(tree), "data")
            mlflow.log_artifact(str(tree / "f1.txt"))
            mlflow.log_text("t", "one.txt")
        run_id = run.info.run_id
        client.log_artifact(run_id, str(tree / "f2.txt"), "late")  # after the run ended
        for d in ("down", "whole", "x"):
            (root / d).mkdir()  # MLflow 2.x wants the destination to exist
        down = Path(client.download_artifacts(run_id, "data", str(root / "down")))
        out["down"] = sorted(str(p.relative_to(down)) for p in down.rglob("*"))
        out["loaded"] = mlflow.artifacts.load_text(f"runs:/{run_id}/one.txt")
        whole = mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(root / "whole"))
        out["whole"] = sorted(str(p.relative_to(whole)) for p in Path(whole).rglob("*"))
        out["missing"] = _error(lambda: client.download_artifacts(run_id, "nope", str(root / "x")))
        out["runs"] = _runs([experiment_id])
        return out

    off, on, events = both(workflow)
    assert on == off
    uploads = events.of_type("mlflow.run.artifacts")
    assert sorted(e.data["file_count"] for e in uploads) == [1, 1, 1, 6]


def test_async_logging(both):
    def workflow(root: Path, experiment_id: str) -> Any:
        mlflow.config.enable_async_logging(True)
        try:
            with mlflow.start_run(run_name="async"):
                for step in range(30):
                    mlflow.log_metric("loss", 1.0 / (step + 1), step=step, synchronous=False)
                mlflow.log_param("p", "1", synchronous=False)
                mlflow.set_tag("t", "x", synchronous=False).wait()
        finally:
            mlflow.config.enable_async_logging(False)
        return _runs([experiment_id])

    off, on, events = both(workflow)
    assert on == off
    assert sum(e.data["points"] for e in events.of_type("mlflow.run.metrics")) == 30


def test_sklearn_autolog(both):
    pytest.importorskip("sklearn")
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    def workflow(root: Path, experiment_id: str) -> Any:
        X = np.arange(40, dtype=float).reshape(20, 2)
        y = X @ np.array([1.5, -2.0]) + 3.0
        mlflow.sklearn.autolog(silent=True)
        try:
            with mlflow.start_run(run_name="autolog"):
                LinearRegression().fit(X, y)
        finally:
            mlflow.sklearn.autolog(disable=True, silent=True)
        return _rounded(_runs([experiment_id]))

    off, on, events = both(workflow)
    assert on == off
    assert events.of_type("mlflow.run.params")


def _rounded(value: Any) -> Any:
    """A perfect fit's error metrics are rounding noise (1e-30 one run, 0.0 the next, as BLAS threads fall):
    compare them to 9 decimals."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rounded(v) for v in value)
    return value
