"""Run and experiment lifecycle: every run that ends has its start, experiments created/renamed/deleted/restored
and runs deleted/restored are announced, and an event described on the hook's worker keeps its call's context."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from databricks_nats.integrations import mlflow as nats_mlflow
from databricks_nats.integrations.mlflow import facts
from databricks_nats.model.causation import Causation, caused_by


def _settle() -> None:
    hook = nats_mlflow.current_hook()
    assert hook is not None
    assert hook.settle(30)


def _of_run(events, run_id: str) -> list[str]:
    return [e.type for e in events if e.data.get("run_id") == run_id]


def test_a_resumed_run_announces_its_start_before_its_other_events_and_its_end(tracking, record, assert_valid_event):
    """``start_run(run_id=…)`` of a run created before the hook: started (from MLflow's own get_run), then the rest."""
    client = MlflowClient()
    created = client.create_run(tracking.experiment_id, run_name="resumed")
    client.set_terminated(created.info.run_id)
    events = record()
    with mlflow.start_run(run_id=created.info.run_id):
        mlflow.log_param("lr", "0.1")
    _settle()
    run_id = created.info.run_id
    assert _of_run(events, run_id) == ["mlflow.run.started", "mlflow.run.params", "mlflow.run.finished"]
    started = events.of_type("mlflow.run.started")[0]
    assert_valid_event(started.envelope)
    assert started.data["run_name"] == "resumed"
    assert started.data["start_time"] == created.info.start_time
    assert started.envelope["id"] == facts.fact_id("mlflow.run.started", {"run_id": run_id})  # stored once


def test_a_run_ended_by_another_client_gets_its_start_first_with_the_calls_causation(tracking, record):
    """A run created elsewhere and ended here: started (looked up on the worker) then finished, both caused by
    the event being handled when the run was ended."""
    run = MlflowClient().create_run(tracking.experiment_id)
    events = record()
    cause = Causation("01J0CAUSE", "01J0CHAIN", 1)
    with caused_by(cause):
        MlflowClient().set_terminated(run.info.run_id, "FAILED")
    _settle()
    mine = [e for e in events if e.data.get("run_id") == run.info.run_id]
    assert [e.type for e in mine] == ["mlflow.run.started", "mlflow.run.failed"]
    for e in mine:
        assert e.envelope["causationid"] == "01J0CAUSE"
        assert e.envelope["correlationid"] == "01J0CHAIN"
    assert mine[0].data["experiment_id"] == tracking.experiment_id


def test_ending_a_run_twice_or_renaming_it_is_no_second_end(tracking, record):
    """MLflow passes a renamed run's status along: that is not an end; ending an ended run says nothing new."""
    events = record()
    client = MlflowClient()
    run_id = client.create_run(tracking.experiment_id).info.run_id
    client.set_terminated(run_id)
    client.update_run(run_id, name="renamed")
    client.set_terminated(run_id)
    _settle()
    assert _of_run(events, run_id) == ["mlflow.run.started", "mlflow.run.finished"]
    assert client.get_run(run_id).info.run_name == "renamed"


def test_experiments_created_renamed_deleted_and_restored_are_announced(tracking, record, assert_valid_event):
    """One event per change, with the experiment's name (the previous one on a rename)."""
    events = record()
    client = MlflowClient()
    experiment_id = client.create_experiment("lifecycle", artifact_location=str(tracking.root / "art"))
    client.rename_experiment(experiment_id, "lifecycle-2")
    client.delete_experiment(experiment_id)
    client.restore_experiment(experiment_id)
    _settle()
    mine = [e for e in events if e.type.startswith("mlflow.experiment.")]
    assert [e.type for e in mine] == [
        "mlflow.experiment.created",
        "mlflow.experiment.renamed",
        "mlflow.experiment.deleted",
        "mlflow.experiment.restored",
    ]
    for e in mine:
        assert_valid_event(e.envelope)
        assert e.data["experiment_id"] == experiment_id
    assert mine[0].data["name"] == "lifecycle"
    assert mine[0].data["artifact_location"] == str(tracking.root / "art")
    assert mine[1].data["name"] == "lifecycle-2"
    assert mine[1].data["previous_name"] == "lifecycle"
    assert mine[2].data["name"] == mine[3].data["name"] == "lifecycle-2"
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"


def test_runs_deleted_and_restored_are_announced_also_for_runs_made_elsewhere(tracking, record, assert_valid_event):
    """delete_run / restore_run: run events on the run's subject (an unseen run's experiment looked up on the
    worker through the same store)."""
    elsewhere = MlflowClient().create_run(tracking.experiment_id).info.run_id
    events = record()
    with mlflow.start_run() as run:
        pass
    for run_id in (run.info.run_id, elsewhere):
        mlflow.delete_run(run_id)
        MlflowClient().restore_run(run_id)
    _settle()
    for run_id in (run.info.run_id, elsewhere):
        changes = [e for e in events if e.type in ("mlflow.run.deleted", "mlflow.run.restored")]
        mine = [e for e in changes if e.data["run_id"] == run_id]
        assert [e.type for e in mine] == ["mlflow.run.deleted", "mlflow.run.restored"]
        for e in mine:
            assert_valid_event(e.envelope)
            assert e.data["experiment_id"] == tracking.experiment_id
    assert MlflowClient().get_run(elsewhere).info.lifecycle_stage == "active"
