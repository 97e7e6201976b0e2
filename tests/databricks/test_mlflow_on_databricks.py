"""MLflow on Databricks, for real: a real ``MlflowClient`` and fluent API with tracking URI ``databricks`` and
registry URI ``databricks-uc``, against a loopback stub of the documented Databricks REST API
(``tests/databricks/rest_stub.py``); events are captured in memory, encoded exactly as they would be sent.

MLflow reaches the stub as it reaches a workspace: ``DATABRICKS_HOST`` + ``DATABRICKS_TOKEN`` (or a profile
in ``DATABRICKS_CONFIG_FILE`` for ``databricks://<profile>``), read by the Databricks SDK, which accepts an
``http://`` host; its host-metadata probe (``/.well-known/databricks-config``) gets a 404 and the SDK falls
back to the configuration given. Artifacts are uploaded over HTTP: on MLflow 3 through the Files API, on 2.x
(and on 3.x when the SDK path fails) through presigned URLs from ``credentials-for-write``; Unity Catalog
model versions through ``fs/create-upload-url`` presigned URLs (``storage_mode: DEFAULT_STORAGE``).

What users rely on, on both CI profiles (MLflow 3.x and 2.21):

* every ``mlflow.model.*`` event of a model registered with a short name carries the three-level name the
  registry resolved (one subject per model); names are learned from MLflow's own results, else asked of the
  registry at most once per name, after MLflow's call, bounded in time, falling back to the typed name;
* run and model URLs use the Databricks UI routes of the workspace context detection found, also when
  ``DATABRICKS_HOST`` is unset (as in a notebook);
* one artifact URI form (``dbfs:/databricks/mlflow-tracking/…``) in every event.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from databricks_nats.integrations import mlflow as nats_mlflow
from databricks_nats.testing import Capture, capture
from tests.databricks import rest_stub

pytestmark = pytest.mark.slow

MLFLOW_3 = int(mlflow.__version__.split(".")[0]) >= 3
# the SDK's optional probes, a 404 is fine: host metadata, and (databricks-sdk >= 0.16x) the Files API endpoints
_PROBES = {("GET", "/.well-known/databricks-config"), ("GET", "/api/2.0/fs/endpoints")}


@pytest.fixture
def workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[rest_stub.Workspace]:
    """The stub workspace, MLflow pointed at it (``databricks`` / ``databricks-uc``); everything restored after."""
    import mlflow.tracking._model_registry.utils as registry_utils
    from databricks.sdk import WorkspaceClient
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from databricks_nats.integrations.databricks import sdk

    running = rest_stub.serve()
    ws = running.workspace
    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "MLFLOW_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABRICKS_HOST", ws.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", ws.token)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))  # never the user's file
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a wrong answer fails at once, not in minutes
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    previous_tracking = tracking_utils._tracking_uri
    monkeypatch.chdir(tmp_path)
    sdk.set_workspace_client(WorkspaceClient(host=ws.url, token=ws.token))  # what context detection asks
    mlflow.set_tracking_uri("databricks")
    mlflow.set_registry_uri("databricks-uc")
    try:
        yield ws
    finally:
        with capture():  # whatever ending runs still publishes goes nowhere
            while mlflow.active_run() is not None:
                mlflow.end_run()
            nats_mlflow.uninstall()
        mlflow.config.enable_async_logging(False)
        mlflow.set_tracking_uri(previous_tracking)
        sdk.set_workspace_client(None)
        rest_stub.stop(running)


def _model_subject(namespace: dict[str, str], name_token: str, action: str) -> str:
    return f"dbx.{namespace['workspace']}.{namespace['env']}.mlflow.model.{name_token}.{action}"


def _run_events(events: Capture, run_id: str) -> list[Any]:
    return [e for e in events if e.type.startswith("mlflow.run.") and e.data.get("run_id") == run_id]


def _log_model() -> Any:
    """A small scikit-learn model with a signature (Unity Catalog rejects models without one)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    X = np.arange(40, dtype=float).reshape(20, 2)
    model = LinearRegression().fit(X, X @ np.array([1.5, -2.0]) + 3.0)
    signature = infer_signature(X, model.predict(X))
    if MLFLOW_3:
        return mlflow.sklearn.log_model(model, name="model", signature=signature)
    return mlflow.sklearn.log_model(model, artifact_path="model", signature=signature)


def _unexpected(ws: rest_stub.Workspace) -> list[tuple[str, str]]:
    return [c for c in ws.unknown if c not in _PROBES]


# ---- runs: Databricks URLs, one artifact URI form ------------------------------------------------------------


def test_a_run_on_databricks_has_the_workspace_run_url_and_one_artifact_uri_form(workspace, record, tmp_path):
    """run_url is ``<workspace>/ml/experiments/<exp>/runs/<run>``; every event names ``dbfs:/databricks/…``."""
    events = record(metrics_mode="every")
    experiment = mlflow.set_experiment("/Users/ml-engineer@example.com/churn")
    src = tmp_path / "notes.txt"
    src.write_text("hello")
    with mlflow.start_run(run_name="train", tags={"team": "ml"}) as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"epochs": 3})
        mlflow.log_metric("loss", 0.5, step=0)
        mlflow.log_metrics({"loss": 0.25, "acc": 0.9}, step=1)
        mlflow.set_tag("stage", "dev")
        mlflow.log_artifact(str(src))
        mlflow.log_dict({"a": 1}, "config/params.json")
    run_id, exp_id = run.info.run_id, experiment.experiment_id
    stored = MlflowClient().get_run(run_id)

    mine = _run_events(events, run_id)
    types = [e.type for e in mine]
    assert types[0] == "mlflow.run.started"
    assert types[-1] == "mlflow.run.finished"
    assert {"mlflow.run.params", "mlflow.run.metrics", "mlflow.run.tags", "mlflow.run.artifacts"} <= set(types)
    run_url = f"{workspace.url}/ml/experiments/{exp_id}/runs/{run_id}"
    assert mine[0].data["run_url"] == mine[-1].data["run_url"] == run_url
    artifact_uri = f"dbfs:/databricks/mlflow-tracking/{exp_id}/{run_id}/artifacts"
    assert stored.info.artifact_uri == artifact_uri
    assert {e.data["artifact_uri"] for e in mine} == {artifact_uri}  # run.artifacts too, not dbfs://databricks/…
    uploads = [e.data for e in mine if e.type == "mlflow.run.artifacts"]
    assert sorted(f["path"] for u in uploads for f in u["files"]) == ["config/params.json", "notes.txt"]
    assert workspace.blobs[f"databricks/mlflow-tracking/{exp_id}/{run_id}/artifacts/notes.txt"] == b"hello"
    params: dict[str, str] = {}
    for e in mine:
        params.update(e.data.get("params", {}))
    assert params == stored.data.params == {"lr": "0.01", "epochs": "3"}
    assert mine[-1].data["metrics"] == stored.data.metrics == {"loss": 0.25, "acc": 0.9}
    assert _unexpected(workspace) == []


def test_run_url_without_databricks_host_comes_from_context_detection(workspace, record, monkeypatch, tmp_path):
    """As in a notebook, no ``DATABRICKS_HOST``: the tracking URI names a profile, the URL is the detected one."""
    config = tmp_path / "databrickscfg"
    auth = f"host = {workspace.url}\ntoken = {workspace.token}\n"
    # MLflow 3's run-artifact path builds a default WorkspaceClient whatever the profile: DEFAULT is needed too
    config.write_text(f"[DEFAULT]\n{auth}\n[stub]\n{auth}")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(config))
    monkeypatch.delenv("DATABRICKS_HOST")
    monkeypatch.delenv("DATABRICKS_TOKEN")
    mlflow.set_tracking_uri("databricks://stub")
    events = record()
    experiment = mlflow.set_experiment("/Shared/notebook-experiment")
    src = tmp_path / "weights.bin"
    src.write_bytes(b"\x00\x01")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(src), "ckpt")
    run_id, exp_id = run.info.run_id, experiment.experiment_id

    mine = _run_events(events, run_id)
    assert mine[0].data["run_url"] == f"{workspace.url}/ml/experiments/{exp_id}/runs/{run_id}"
    artifacts = next(e.data for e in mine if e.type == "mlflow.run.artifacts")
    # MLflow hands the run's repository dbfs://stub@databricks/databricks/…: the event has the run's own form
    assert (
        artifacts["artifact_uri"]
        == run.info.artifact_uri
        == f"dbfs:/databricks/mlflow-tracking/{exp_id}/{run_id}/artifacts"
    )
    assert artifacts["files"] == [{"path": "ckpt/weights.bin", "size": 2}]
    assert workspace.blobs[f"databricks/mlflow-tracking/{exp_id}/{run_id}/artifacts/ckpt/weights.bin"] == b"\x00\x01"
    assert _unexpected(workspace) == []


def test_async_logging_and_log_inputs_reach_the_workspace_and_the_events(workspace, record):
    """Async logging (``synchronous=False`` and the global switch) and ``log_input`` are published as logged."""
    events = record(metrics_mode="every")
    mlflow.set_experiment("/Shared/async")
    mlflow.config.enable_async_logging(True)
    dataset = mlflow.data.from_numpy(
        np.arange(6.0).reshape(3, 2), source="https://data.example.com/train.npy", name="train"
    )
    with mlflow.start_run() as run:
        mlflow.log_input(dataset, context="training")
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step, synchronous=False)
        mlflow.log_param("optimizer", "adam")
        mlflow.set_tag("phase", "fit")
    run_id = run.info.run_id
    stored = MlflowClient().get_run(run_id)

    mine = _run_events(events, run_id)
    assert mine[-1].type == "mlflow.run.finished"
    assert mine[-1].data["metrics"] == stored.data.metrics == {"loss": pytest.approx(1 / 3)}
    metrics = [e.data for e in mine if e.type == "mlflow.run.metrics"]
    assert sum(m["points"] for m in metrics) == 3  # every point, however the async queue batched them
    assert metrics[-1]["metrics"]["loss"]["value"] == pytest.approx(1 / 3)
    (inputs,) = [e.data for e in mine if e.type == "mlflow.run.inputs"]
    assert inputs["datasets"][0]["name"] == "train"
    assert inputs["datasets"][0]["context"] == "training"
    assert inputs["datasets"][0]["digest"] == dataset.digest
    assert [d.dataset.name for d in stored.inputs.dataset_inputs] == ["train"]
    assert stored.data.params == {"optimizer": "adam"}
    assert _unexpected(workspace) == []


@pytest.mark.skipif(not MLFLOW_3, reason="MLflow 2.x has no LoggedModel (the model's files are a run.artifacts event)")
def test_logged_model_events_use_the_databricks_model_url_and_artifact_form(workspace, record):
    """``log_model`` on MLflow 3: logged and finalized, flavours read on upload, Databricks URL and dbfs:/ form."""
    events = record()
    experiment = mlflow.set_experiment("/Shared/models")
    with mlflow.start_run() as run:
        info = _log_model()
    model_id, exp_id = info.model_id, experiment.experiment_id

    logged = events.of_type("mlflow.logged_model.logged")
    finalized = events.of_type("mlflow.logged_model.finalized")
    assert [e.data["model_id"] for e in logged] == [e.data["model_id"] for e in finalized] == [model_id]
    data = finalized[0].data
    assert data["status"] == "READY"
    assert data["source_run_id"] == run.info.run_id
    assert "sklearn" in data["flavors"]
    assert data["artifact_location"] == f"dbfs:/databricks/mlflow-tracking/{exp_id}/logged_models/{model_id}/artifacts"
    assert data["model_url"] == f"{workspace.url}/ml/experiments/{exp_id}/models/{model_id}"
    assert finalized[0].subject.endswith(f".mlflow.logged_model.{exp_id}.{model_id}.finalized")
    prefix = f"databricks/mlflow-tracking/{exp_id}/logged_models/{model_id}/artifacts/"
    assert f"{prefix}MLmodel" in workspace.blobs  # uploaded for real
    assert _unexpected(workspace) == []


# ---- Unity Catalog: one three-level name per model ---------------------------------------------------------------


def test_a_model_registered_with_a_short_name_has_one_name_and_subject_in_every_event(workspace, record, namespace):
    """Register, alias set/delete, version tag, delete with ``churn``: every event on ``main.default.churn``."""
    events = record()
    hook = nats_mlflow.current_hook()
    assert hook is not None
    lookups = hook.names.lookups
    mlflow.set_experiment("/Shared/registry")
    with mlflow.start_run() as run:
        info = _log_model()
    client = MlflowClient()
    mv = mlflow.register_model(info.model_uri, "churn")
    client.set_registered_model_alias("churn", "champion", mv.version)
    client.set_model_version_tag("churn", mv.version, "validated", "yes")
    client.delete_registered_model_alias("churn", "champion")
    client.delete_model_version("churn", mv.version)
    client.delete_registered_model("churn")

    full = "main.default.churn"
    assert mv.name == full  # the registry resolved it (MLflow returns what the server said)
    model_events = [e for e in events if e.type.startswith("mlflow.model.")]
    assert [e.type.rsplit(".", 1)[1] for e in model_events] == [
        "registered",
        "version_created",
        "alias_set",
        "version_tag_set",
        "alias_deleted",
        "version_deleted",
        "deleted",
    ]
    for e in model_events:
        assert e.data["name"] == full, e.type
        assert e.subject == _model_subject(namespace, "main%2Edefault%2Echurn", e.type.rsplit(".", 1)[1])
        assert e.data["is_unity_catalog"] is True
        assert e.data["catalog_name"] == "main"
    by_type = {e.type: e.data for e in model_events}
    assert by_type["mlflow.model.alias_set"]["model_uri"] == f"models:/{full}@champion"
    assert by_type["mlflow.model.version_created"]["model_uri"] == f"models:/{full}/1"
    assert by_type["mlflow.model.version_created"]["run_id"] == run.info.run_id
    assert by_type["mlflow.model.version_created"]["model_url"] == (
        f"{workspace.url}/explore/data/models/main/default/churn/version/1"
    )
    assert by_type["mlflow.model.registered"]["model_url"] == f"{workspace.url}/explore/data/models/main/default/churn"
    assert by_type["mlflow.model.version_tag_set"]["key"] == "validated"
    assert any(k.startswith("uc/Models/") and k.endswith("/MLmodel") for k in workspace.blobs)  # real upload
    assert full not in workspace.models  # the workspace really deleted it
    assert hook.names.lookups == lookups  # learned from MLflow's own results: no extra round trip
    assert _unexpected(workspace) == []


def _registry_store() -> Any:
    """The registry store MLflow hands out for ``databricks-uc`` (the one the hook wraps), for direct store calls.

    ``MlflowClient`` reads the registered model before most registry calls (its prompt check), which already
    teaches the hook the full name; other callers of the store (and MLflow 3's ``set_model_version_tag``) do not.
    """
    from mlflow.tracking._model_registry.utils import _get_store

    return _get_store()


def test_a_name_the_hook_has_not_seen_is_resolved_once_through_the_registry(workspace, record, namespace):
    """A model the hook never saw: its first call without a name in the result asks the registry, once."""
    from mlflow.entities.model_registry import ModelVersionTag

    workspace.add_model("main.default.fraud", versions=1)
    lookups = ("GET", "/api/2.0/mlflow/unity-catalog/registered-models/get")
    events = record()
    hook = nats_mlflow.current_hook()
    assert hook is not None
    before = (hook.names.lookups, hook.names.fallbacks)
    store = _registry_store()
    store.set_registered_model_alias("fraud", "champion", "1")
    store.set_model_version_tag("fraud", "1", ModelVersionTag("owner", "risk-team"))
    store.delete_registered_model_alias("fraud", "champion")
    assert hook.settle(30)  # the lookup and the events behind it run on the hook's worker

    assert workspace.count(*lookups) == 1  # one lookup for the name, after MLflow's own (first) call
    assert [e.type for e in events] == [
        "mlflow.model.alias_set",
        "mlflow.model.version_tag_set",
        "mlflow.model.alias_deleted",
    ]
    for e in events:
        assert e.data["name"] == "main.default.fraud"
        assert e.subject == _model_subject(namespace, "main%2Edefault%2Efraud", e.type.rsplit(".", 1)[1])
    assert (hook.names.lookups - before[0], hook.names.fallbacks - before[1]) == (1, 0)


def test_a_name_that_cannot_be_resolved_falls_back_to_the_typed_name_and_says_so_once(workspace, record, caplog):
    """The lookup fails (no BROWSE on the model): MLflow's call is untouched, the typed name is used, one warning."""
    from mlflow.entities.model_registry import ModelVersionTag

    for name in ("main.default.ghost_a", "main.default.ghost_b"):
        workspace.add_model(name, versions=1)
        workspace.unreadable.add(name)
    events = record()
    hook = nats_mlflow.current_hook()
    assert hook is not None
    before = (hook.names.lookups, hook.names.fallbacks)
    caplog.set_level(logging.DEBUG, logger="databricks_nats")
    store = _registry_store()

    assert store.set_model_version_tag("ghost_a", "1", ModelVersionTag("k", "v")) is None  # MLflow's result
    store.set_model_version_tag("ghost_b", "1", ModelVersionTag("k", "v"))
    store.set_model_version_tag("ghost_a", "1", ModelVersionTag("k2", "v2"))  # not asked again
    assert hook.settle(30)

    assert workspace.versions[("main.default.ghost_a", 1)]["tags"] == {"k": "v", "k2": "v2"}
    # one model's events keep their order; the two models' may interleave (each waits only for its own lookup)
    assert [e.data["key"] for e in events if e.data["name"] == "ghost_a"] == ["k", "k2"]
    assert [e.data["name"] for e in events if e.data["name"] != "ghost_a"] == ["ghost_b"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "Unity Catalog name" in r.message]
    assert len(warnings) == 1
    assert "ghost_a" in warnings[0].getMessage()
    assert (hook.names.lookups - before[0], hook.names.fallbacks - before[1]) == (2, 2)


def test_a_slow_registry_holds_the_worker_at_most_the_timeout_and_the_late_answer_is_learned(workspace, record):
    """The lookup (on the hook's worker) is bounded: past ``names.timeout`` the event has the typed name; the late
    answer serves the next."""
    import time

    workspace.add_model("main.default.slowpoke", versions=1)
    workspace.delays["/api/2.0/mlflow/unity-catalog/registered-models/get"] = 1.0
    events = record()
    hook = nats_mlflow.current_hook()
    assert hook is not None
    store = _registry_store()
    saved, hook.names.timeout = hook.names.timeout, 0.1
    try:
        store.set_registered_model_alias("slowpoke", "champion", "1")
        deadline = time.monotonic() + 30
        while hook.names.known(store, "slowpoke") != "main.default.slowpoke" and time.monotonic() < deadline:
            time.sleep(0.05)
        store.delete_registered_model_alias("slowpoke", "champion")
    finally:
        hook.names.timeout = saved
    assert workspace.models["main.default.slowpoke"]["aliases"] == {}  # both MLflow calls went through
    assert [e.data["name"] for e in events] == ["slowpoke", "main.default.slowpoke"]
    assert workspace.count("GET", "/api/2.0/mlflow/unity-catalog/registered-models/get") == 1


# ---- a notebook: no DATABRICKS_HOST, the workspace URL from the Spark conf -------------------------------------------


def test_in_a_notebook_the_run_url_uses_the_workspace_url_of_the_spark_conf(
    workspace, record, monkeypatch, tmp_path, spark
):
    """Notebooks have no ``DATABRICKS_HOST``; the session's ``spark.databricks.workspaceUrl`` names the workspace."""
    config = tmp_path / "databrickscfg"
    config.write_text(f"[DEFAULT]\nhost = {workspace.url}\ntoken = {workspace.token}\n")  # the notebook's own auth
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(config))
    monkeypatch.delenv("DATABRICKS_HOST")
    monkeypatch.delenv("DATABRICKS_TOKEN")
    spark.conf.set("spark.databricks.workspaceUrl", "adb-5555555555555555.15.azuredatabricks.net")
    try:
        events = record()
        experiment = mlflow.set_experiment("/Users/ml-engineer@example.com/notebook")
        with mlflow.start_run() as run:
            mlflow.log_metric("auc", 0.91)
    finally:
        spark.conf.unset("spark.databricks.workspaceUrl")
    url = "https://adb-5555555555555555.15.azuredatabricks.net"
    started, *_, finished = _run_events(events, run.info.run_id)
    assert started.data["run_url"] == finished.data["run_url"]
    assert started.data["run_url"] == f"{url}/ml/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
