"""Regression test: artifacts of a run the hook did not see start still name the run's real experiment."""

from __future__ import annotations

from mlflow import MlflowClient


def test_artifacts_of_a_run_started_before_install_use_the_runs_experiment_id(tracking, record, subject_of):
    """Artifacts logged to a run the hook did not see start are announced under the run's real experiment."""
    client = MlflowClient()
    experiment_id = client.create_experiment("custom", artifact_location=str(tracking.root / "elsewhere"))
    run = client.create_run(experiment_id)
    events = record()
    client.log_text(run.info.run_id, "x", "out.txt")
    (artifacts,) = events.of_type("mlflow.run.artifacts")
    assert artifacts.data["experiment_id"] == experiment_id
    assert artifacts.subject == subject_of("run", experiment_id, run.info.run_id, "artifacts")
