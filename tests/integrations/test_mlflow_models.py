"""Models: scikit-learn autologging (MLflow 3 logged models) and the model registry, against a real sqlite store."""

from __future__ import annotations

from collections import Counter

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from databricks_nats.integrations import mlflow as nats_mlflow

sklearn_linear = pytest.importorskip("sklearn.linear_model")
MLFLOW_3 = int(mlflow.__version__.split(".")[0]) >= 3


def _data() -> tuple[np.ndarray, np.ndarray]:
    X = np.arange(40, dtype=float).reshape(20, 2)
    return X, X @ np.array([1.5, -2.0]) + 3.0


@pytest.fixture
def sklearn_autolog():
    """``mlflow.sklearn.autolog()`` for one test (no model signature/input example: less to compute)."""
    import mlflow.sklearn

    mlflow.sklearn.autolog(log_input_examples=False, log_model_signatures=False, silent=True)
    yield
    mlflow.sklearn.autolog(disable=True, silent=True)


def test_sklearn_autolog_publishes_run_model_inputs_metrics_and_artifacts(
    tracking, record, sklearn_autolog, subject_of, assert_valid_event
):
    """Autologging a LinearRegression publishes params, the dataset, the logged model (logged, finalized), metrics."""
    events = record()
    X, y = _data()
    with mlflow.start_run() as run:
        sklearn_linear.LinearRegression().fit(X, y)

    run_id, exp = run.info.run_id, run.info.experiment_id
    for e in events:
        assert_valid_event(e.envelope)
    kinds = Counter(events.types())
    assert kinds["mlflow.run.started"] == kinds["mlflow.run.finished"] == 1
    assert kinds["mlflow.run.params"] >= 1
    assert kinds["mlflow.run.metrics"] >= 1

    params = {}
    for e in events.of_type("mlflow.run.params"):
        params.update(e.data["params"])
    assert params == mlflow.get_run(run_id).data.params
    assert params["fit_intercept"] == "True"

    inputs = events.of_type("mlflow.run.inputs")
    assert len(inputs) == 1
    (dataset,) = inputs[0].data["datasets"]
    assert dataset["context"] == "train"
    assert dataset["digest"] == mlflow.get_run(run_id).inputs.dataset_inputs[0].dataset.digest

    metrics = {}
    for e in events.of_type("mlflow.run.metrics"):
        metrics.update({k: v["value"] for k, v in e.data["metrics"].items()})
    assert metrics["training_r2_score"] == pytest.approx(1.0)
    assert events.of_type("mlflow.run.finished")[0].data["metrics"] == mlflow.get_run(run_id).data.metrics

    artifacts = [f["path"] for e in events.of_type("mlflow.run.artifacts") for f in e.data["files"]]
    assert "estimator.html" in artifacts

    if MLFLOW_3:
        logged, finalized = (
            events.of_type("mlflow.logged_model.logged"),
            events.of_type("mlflow.logged_model.finalized"),
        )
        assert len(logged) == len(finalized) == 1
        model_id = logged[0].data["model_id"]
        model = mlflow.get_logged_model(model_id)
        assert logged[0].data["source_run_id"] == run_id
        assert logged[0].data["model_uri"] == f"models:/{model_id}"
        assert finalized[0].data["model_id"] == model_id
        assert finalized[0].data["status"] == "READY" == str(model.status)
        assert finalized[0].data["artifact_location"] == model.artifact_location
        assert logged[0].subject == subject_of("logged_model", exp, model_id, "logged")
        assert events.types().index("mlflow.logged_model.logged") < events.types().index(
            "mlflow.logged_model.finalized"
        )
        # the model's own files are announced by the logged-model events, not as run artifacts
        assert not [p for p in artifacts if p.startswith(("model/", "MLmodel"))]


@pytest.fixture
def logged_model(tracking):
    """A small scikit-learn model logged before the hook (pip requirements given: no inference subprocess)."""
    import mlflow.sklearn

    X, y = _data()
    with mlflow.start_run() as run:
        where = {"name": "model"} if MLFLOW_3 else {"artifact_path": "model"}  # MLflow 2.x has no name=
        info = mlflow.sklearn.log_model(
            sklearn_linear.LinearRegression().fit(X, y), pip_requirements=["scikit-learn"], **where
        )
    return run.info.run_id, info


def test_registry_calls_publish_model_events_with_encoded_uc_style_name(
    tracking, logged_model, record, subject_of, assert_valid_event
):
    """register_model, aliases, version tags, stage transitions and deletions each publish their model event."""
    run_id, info = logged_model
    events = record()
    client = MlflowClient()
    name = "main.ml.churn"

    mv = mlflow.register_model(info.model_uri, name)
    client.set_registered_model_alias(name, "champion", mv.version)
    client.set_model_version_tag(name, mv.version, "validated", "yes")
    client.set_model_version_tag(name, mv.version, "api_token", "tok-registry-secret")
    with pytest.warns(FutureWarning):
        client.transition_model_version_stage(name, mv.version, "Production")
    client.delete_registered_model_alias(name, "champion")
    mv2 = mlflow.register_model(info.model_uri, name)  # the model exists: only a version is created
    client.delete_model_version(name, mv2.version)
    client.delete_registered_model(name)

    model_events = [e for e in events if e.type.startswith("mlflow.model.")]
    assert [e.type.rsplit(".", 1)[1] for e in model_events] == [
        "registered",
        "version_created",
        "alias_set",
        "version_tag_set",
        "stage_transitioned",
        "alias_deleted",
        "version_created",
        "version_deleted",
        "deleted",
    ]
    for e in model_events:
        assert_valid_event(e.envelope)
        assert e.subject == subject_of("model", "main%2Eml%2Echurn", e.type.rsplit(".", 1)[1])
        assert e.data["name"] == name
        assert (e.data["is_unity_catalog"], e.data["catalog_name"]) == (False, None)  # a sqlite registry is not UC

    by_type = {e.type: e.data for e in reversed(model_events)}  # first occurrence of each
    created = by_type["mlflow.model.version_created"]
    assert created["version"] == str(mv.version) == "1"
    assert created["source"] == mv.source
    assert created["run_id"] == run_id
    if MLFLOW_3:
        assert created["model_id"] == info.model_id
    assert created["model_uri"] == f"models:/{name}/1"
    alias_set, tag_set = by_type["mlflow.model.alias_set"], by_type["mlflow.model.version_tag_set"]
    assert (alias_set["alias"], alias_set["version"]) == ("champion", "1")
    assert alias_set["model_uri"] == f"models:/{name}@champion"
    assert (tag_set["version"], tag_set["key"], tag_set["value"]) == ("1", "validated", "yes")
    stage = by_type["mlflow.model.stage_transitioned"]
    assert (stage["version"], stage["stage"]) == ("1", "Production")
    assert by_type["mlflow.model.alias_deleted"]["alias"] == "champion"
    assert by_type["mlflow.model.version_deleted"]["version"] == str(mv2.version) == "2"
    assert b"tok-registry-secret" not in b"".join(e.payload for e in events)


def test_creating_an_existing_model_raises_as_without_hook_and_publishes_nothing(tracking, record):
    """A duplicate create_registered_model raises MLflow's very same error with the hook, and publishes nothing."""
    client = MlflowClient()
    client.create_registered_model("dup")
    with pytest.raises(MlflowException) as plain:
        client.create_registered_model("dup")  # the store is not wrapped yet

    events = record()
    with pytest.raises(MlflowException) as hooked:
        client.create_registered_model("dup")
    assert type(hooked.value) is type(plain.value)
    assert hooked.value.error_code == plain.value.error_code == "RESOURCE_ALREADY_EXISTS"
    assert str(hooked.value) == str(plain.value)
    assert list(events) == []

    client.create_registered_model("fresh")  # the hook is live on this very store
    assert events.types() == ["mlflow.model.registered"]
    assert nats_mlflow.installed()
