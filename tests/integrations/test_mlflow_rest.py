"""The REST path: the same workflow against a real ``mlflow server`` publishes what it does on a local sqlite store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.mlflow_server import mlflow_server as start_mlflow_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (sqlite backend, local artifact root) for this module; yields its URL."""
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


def _workflow(scratch: Path, label: str) -> str:
    """One manual run with a nested run, params, metrics, tags, artifacts and a registered model version."""
    src = scratch / f"{label}.txt"
    src.write_text("hello")
    with mlflow.start_run(run_name=label) as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"epochs": 3, "db_password": "never-published"})
        mlflow.log_metric("loss", 0.5, step=0)
        mlflow.log_metrics({"loss": 0.25, "acc": 0.9}, step=1)
        mlflow.set_tag("team", "ml")
        mlflow.set_tags({"stage": "dev"})
        mlflow.log_artifact(str(src))
        mlflow.log_dict({"a": 1}, "config/params.json")
        mlflow.log_text("MLmodel stand-in", "model/MLmodel")
        with mlflow.start_run(nested=True):
            mlflow.log_metric("inner", 1.0)
    client = MlflowClient()
    name = f"model-{label}"
    mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    client.set_registered_model_alias(name, "champion", mv.version)
    client.delete_registered_model_alias(name, "champion")
    return run.info.run_id


def _shape(events, run_id: str, model: str) -> Counter:
    """The event types of one workflow: its runs' (the parent and its child) and its model's."""
    runs = {run_id} | {
        e.data["run_id"] for e in events.of_type("mlflow.run.started") if e.data["parent_run_id"] == run_id
    }
    return Counter(e.type for e in events if e.data.get("run_id") in runs or e.data.get("name") == model)


def test_rest_store_publishes_the_same_event_types_as_sqlite(
    tracking, mlflow_server, record, subject_of, assert_valid_event
):
    """Against a real ``mlflow server`` the workflow publishes the same event types, subjects and data as on sqlite."""
    events = record(metrics_mode="every")
    local_run = _workflow(tracking.root, "local")

    mlflow.set_tracking_uri(mlflow_server)
    experiment = mlflow.set_experiment(f"rest-{tracking.root.name}")
    remote_run = _workflow(tracking.root, "remote")
    remote = MlflowClient().get_run(remote_run)

    local_shape, remote_shape = _shape(events, local_run, "model-local"), _shape(events, remote_run, "model-remote")
    assert remote_shape == local_shape
    assert remote_shape["mlflow.run.started"] == remote_shape["mlflow.run.finished"] == 2
    assert {"mlflow.run.params", "mlflow.run.metrics", "mlflow.run.tags", "mlflow.run.artifacts"} <= set(remote_shape)
    assert {"mlflow.model.registered", "mlflow.model.version_created", "mlflow.model.alias_set"} <= set(remote_shape)

    mine = [e for e in events if e.type.startswith("mlflow.run.") and e.data["run_id"] == remote_run]
    for e in mine:
        assert_valid_event(e.envelope)
        assert e.subject == subject_of("run", experiment.experiment_id, remote_run, e.type.rsplit(".", 1)[1])
    started = next(e.data for e in mine if e.type == "mlflow.run.started")
    assert started["run_url"] == f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs/{remote_run}"
    assert started["artifact_uri"] == remote.info.artifact_uri
    params = {}
    for e in mine:
        if e.type == "mlflow.run.params":
            params.update(e.data["params"])
    assert params == {"lr": "0.01", "epochs": "3"}
    finished = next(e.data for e in mine if e.type == "mlflow.run.finished")
    assert finished["metrics"] == remote.data.metrics == {"loss": 0.25, "acc": 0.9}
    created = next(e.data for e in events.of_type("mlflow.model.version_created") if e.data["name"] == "model-remote")
    assert created["run_id"] == remote_run
    assert created["version"] == "1"
