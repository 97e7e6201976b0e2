"""Regression tests for hook bugs the integration tests found (custom artifact locations, metric order, reinstall)."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

import databricks_nats
from databricks_nats.integrations import mlflow as nats_mlflow
from databricks_nats.testing import capture


def test_artifacts_of_an_experiment_with_custom_artifact_location_use_the_runs_experiment_id(
    tracking, record, subject_of
):
    """A run in an experiment with a custom artifact_location announces artifacts on its own run subject."""
    experiment_id = MlflowClient().create_experiment("custom", artifact_location=str(tracking.root / "elsewhere"))
    events = record()
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text("x", "out.txt")
    (artifacts,) = events.of_type("mlflow.run.artifacts")
    assert artifacts.data["experiment_id"] == experiment_id
    assert artifacts.subject == subject_of("run", experiment_id, run.info.run_id, "artifacts")


def test_latest_metrics_on_run_finished_match_mlflows_latest_metrics(tracking, record):
    """run.finished reports the same latest value per metric as MLflow's own run data."""
    events = record()
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 0.1, step=10)
        mlflow.log_metric("loss", 0.9, step=5)  # a backfilled earlier step
    assert mlflow.get_run(run.info.run_id).data.metrics == {"loss": 0.1}
    assert events.of_type("mlflow.run.finished")[0].data["metrics"] == {"loss": 0.1}


def test_settings_configured_before_a_reinstall_take_effect(tracking, namespace):
    """After uninstall(), install() applies the settings then in effect (here each capture's metrics mode)."""
    with capture(**namespace, metrics_mode="off") as events:
        nats_mlflow.install()
        with mlflow.start_run():
            mlflow.log_metric("loss", 1.0)
        nats_mlflow.uninstall()
    assert events.of_type("mlflow.run.metrics") == []

    with capture(**namespace, metrics_mode="every") as events:  # the hook is not installed: nothing to tell
        nats_mlflow.install()
        with mlflow.start_run():
            mlflow.log_metric("loss", 1.0)
            mlflow.log_metric("loss", 0.5)
    assert len(events.of_type("mlflow.run.metrics")) == 2


def test_configure_after_install_applies_from_the_next_run(tracking, namespace):
    """configure(...) while the hook is installed takes effect for runs started afterwards."""
    databricks_nats.configure(disabled=True, metrics_mode="off", **namespace)
    nats_mlflow.install()
    hook = nats_mlflow.current_hook()
    assert hook is not None
    assert hook.metrics.mode == "off"
    databricks_nats.configure(disabled=True, metrics_mode="every", **namespace)
    with mlflow.start_run():
        mlflow.log_metric("loss", 1.0)
    assert hook.metrics.mode == "every"
