"""Regression tests for the hook's known gaps: start_run tags, end-of-run event order, UC-ness, flavours,
capture() settings, autolog(spark=...)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

import databricks_nats
from databricks_nats import _api
from databricks_nats.integrations import mlflow as nats_mlflow
from databricks_nats.integrations.mlflow import _compat
from databricks_nats.settings import resolve_settings
from databricks_nats.testing import Capture, capture

MLFLOW_3 = int(mlflow.__version__.split(".")[0]) >= 3
_END = ("mlflow.run.finished", "mlflow.run.failed", "mlflow.run.killed")


def _of_run(events: list[Any], run_id: str) -> list[str]:
    return [e.type for e in events if e.data.get("run_id") == run_id]


# ---- a. start_run(tags=...) ----------------------------------------------------------------------------


def test_start_run_tags_are_published_as_run_tags_without_system_or_denied_keys(tracking, record, subject_of):
    """Tags given to start_run become one run.tags event right after run.started; mlflow.* and denied keys do not."""
    events = record()
    tags = {"team": "ml", "mlflow.note.content": "a system tag", "api_token": "tok-start-secret", "size": 3}
    with mlflow.start_run(tags=tags) as run:
        pass

    run_id = run.info.run_id
    assert _of_run(events, run_id) == ["mlflow.run.started", "mlflow.run.tags", "mlflow.run.finished"]
    (tagged,) = events.of_type("mlflow.run.tags")
    assert tagged.data["tags"] == {"team": "ml", "size": "3"}
    assert tagged.subject == subject_of("run", run.info.experiment_id, run_id, "tags")
    assert b"tok-start-secret" not in b"".join(e.payload for e in events)
    assert mlflow.get_run(run_id).data.tags["api_token"] == "tok-start-secret"  # MLflow itself stores it


def test_client_create_run_tags_obey_the_allow_list(tracking, record):
    """MlflowClient.create_run(tags=...) publishes only the tags the allow list admits."""
    events = record(allow_keys="team,owner*")
    run = MlflowClient().create_run(tracking.experiment_id, tags={"team": "ml", "owner_email": "a@b", "misc": "x"})
    (tagged,) = events.of_type("mlflow.run.tags")
    assert tagged.data["run_id"] == run.info.run_id
    assert tagged.data["tags"] == {"team": "ml", "owner_email": "a@b"}


# ---- b. the final metrics event and the run's end come last --------------------------------------------


class _SlowPeriodicCapture(Capture):
    """A capture whose hand-over of periodic metric events (the coalescer thread's) takes half a second."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(resolve_settings(environ={}, spark_conf={}, **settings))
        self.entered = threading.Event()
        self.left = threading.Event()

    def emit(self, event: Any) -> None:
        periodic = event.type == "mlflow.run.metrics" and threading.current_thread().name == "databricks-nats-metrics"
        if periodic:
            self.entered.set()
            time.sleep(0.5)
        super().emit(event)
        if periodic:
            self.left.set()


def test_a_periodic_metrics_event_never_arrives_after_run_finished(tracking, namespace):
    """A periodic metrics event being handed over as the run ends still precedes run.finished, which comes last."""
    slow = _SlowPeriodicCapture(**namespace, metrics_mode="coalesce", metrics_interval=0.2)
    previous = _api.set_transport(slow)
    try:
        nats_mlflow.install()
        client = MlflowClient()
        run_id = client.create_run(tracking.experiment_id).info.run_id
        client.log_metric(run_id, "loss", 1.0, step=0)  # the run's first point: published at once
        client.log_metric(run_id, "loss", 0.5, step=1)  # due 0.2 s later, taken by the coalescer thread
        assert slow.entered.wait(10), "the coalescer thread never published"
        client.set_terminated(run_id)  # while the thread is still handing its event over
        assert slow.left.wait(10)
    finally:
        _api.set_transport(previous)

    order = _of_run(slow, run_id)
    assert order == ["mlflow.run.started", "mlflow.run.metrics", "mlflow.run.metrics", "mlflow.run.finished"], order
    metrics = [e.data for e in slow.of_type("mlflow.run.metrics")]
    assert [m["metrics"]["loss"]["value"] for m in metrics] == [1.0, 0.5]
    assert sum(m["points"] for m in metrics) == 2


def test_final_metrics_and_run_end_are_the_last_events_of_each_run_under_load(tracking, record):
    """Eight threads logging to their own runs at a short interval: each run's last events are metrics then its end."""
    events = record(metrics_mode="coalesce", metrics_interval=0.01)
    client = MlflowClient()
    run_ids = [client.create_run(tracking.experiment_id).info.run_id for _ in range(8)]

    def train(run_id: str) -> None:
        for step in range(150):
            client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
        client.set_terminated(run_id)

    threads = [threading.Thread(target=train, args=(r,)) for r in run_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.1)  # anything a late periodic event would add, it adds now

    for run_id in run_ids:
        order = _of_run(events, run_id)
        assert order[-1] == "mlflow.run.finished", order[-3:]
        assert order.count("mlflow.run.finished") == 1
        metrics = [e.data for e in events if e.type == "mlflow.run.metrics" and e.data["run_id"] == run_id]
        assert order[-2] == "mlflow.run.metrics"
        assert sum(m["points"] for m in metrics) == 150
        assert metrics[-1]["metrics"]["loss"]["step"] == 149


# ---- c. Unity Catalog-ness comes from the registry ------------------------------------------------------


def test_a_dotted_model_name_on_a_sqlite_registry_is_not_unity_catalog(tracking, record):
    """A model named ``a.b.c`` in a sqlite registry is announced with is_unity_catalog false and no catalog."""
    events = record()
    client = MlflowClient()
    client.create_registered_model("a.b.c")
    client.delete_registered_model("a.b.c")
    assert [e.type for e in events] == ["mlflow.model.registered", "mlflow.model.deleted"]
    for e in events:
        assert e.data["name"] == "a.b.c"
        assert e.data["is_unity_catalog"] is False
        assert e.data["catalog_name"] is None


@pytest.fixture
def databricks_uc_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlflow.set_registry_uri('databricks-uc')`` with a stub workspace on a closed loopback port (undone after).

    Only building the store is network-free: any UC call first has the Databricks SDK resolve the host's
    metadata, which retries for minutes against an unreachable host, so no test makes one.
    """
    import mlflow.tracking._model_registry.utils as registry_utils  # the registry URI global, restored afterwards

    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.setenv("DATABRICKS_HOST", "http://127.0.0.1:9")  # discard port: refused at once, never the internet
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-stub")
    mlflow.set_registry_uri("databricks-uc")


def test_the_databricks_uc_registry_store_is_wrapped_and_recognised_as_unity_catalog(
    tracking, databricks_uc_registry, record
):
    """With registry URI databricks-uc the store MLflow builds (no network) is wrapped in place and is UC."""
    from mlflow.store._unity_catalog.registry.rest_store import UcModelRegistryStore
    from mlflow.tracking._model_registry.utils import _get_store  # what every registry client asks for

    events = record()
    store = _get_store()
    assert isinstance(store, UcModelRegistryStore)  # wrapped on the instance: isinstance still holds
    assert _compat.is_unity_catalog_registry(store)
    for name in ("create_registered_model", "create_model_version", "set_registered_model_alias"):
        assert hasattr(getattr(store, name), "__wrapped__"), name  # our wrapper sits on the instance
    assert _get_store() is store  # MLflow's cache still serves the one instance
    assert MlflowClient()._get_registry_client().store is store

    from databricks_nats.integrations.mlflow.registry import describe_registry_call

    uc = _compat.is_unity_catalog_registry(store)
    described = describe_registry_call("registered", None, ("main.ml.churn",), {}, uc)
    assert described is not None
    event_type, data = described
    assert event_type == "mlflow.model.registered"
    assert data["is_unity_catalog"] is True
    assert data["catalog_name"] == "main"
    assert list(events) == []


# ---- d. flavours ----------------------------------------------------------------------------------------


def _model() -> Any:
    from sklearn.linear_model import LinearRegression

    X = np.arange(40, dtype=float).reshape(20, 2)
    return LinearRegression().fit(X, X @ np.array([1.5, -2.0]) + 3.0)


@pytest.mark.skipif(not MLFLOW_3, reason="LoggedModel events exist from MLflow 3")
def test_logged_model_finalized_names_the_flavours_of_its_mlmodel(tracking, record):
    """log_model's logged_model.finalized event lists the flavours written to the model's MLmodel."""
    pytest.importorskip("sklearn")
    import mlflow.sklearn

    events = record()
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(_model(), name="model", pip_requirements=["scikit-learn"])
    (finalized,) = events.of_type("mlflow.logged_model.finalized")
    assert finalized.data["model_id"] == info.model_id
    assert sorted(finalized.data["flavors"]) == sorted(info.flavors) == ["python_function", "sklearn"]


@pytest.mark.skipif(not MLFLOW_3, reason="LoggedModel events exist from MLflow 3")
def test_flavours_of_a_model_uploaded_before_the_hook_come_from_its_local_mlmodel(tracking, record, tmp_path: Path):
    """A logged model whose files were uploaded before install still names its flavours when finalised."""
    pytest.importorskip("sklearn")
    import mlflow.sklearn
    from mlflow.entities import LoggedModelStatus

    client = MlflowClient()
    mlflow.sklearn.save_model(_model(), str(tmp_path / "saved"), pip_requirements=["scikit-learn"])
    model = client.create_logged_model(tracking.experiment_id, name="m")
    client.log_model_artifacts(model.model_id, str(tmp_path / "saved"))
    events = record()
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    (finalized,) = events.of_type("mlflow.logged_model.finalized")
    assert sorted(finalized.data["flavors"]) == ["python_function", "sklearn"]


# ---- e. capture() settings reach an installed hook ------------------------------------------------------


def test_capture_settings_reach_a_hook_installed_before_it(tracking, namespace):
    """A hook installed first follows each capture(...)'s metrics mode and deny list, and reverts afterwards."""
    databricks_nats.configure(disabled=True, **namespace)  # default settings: coalesce, default deny list
    nats_mlflow.install()
    with capture(**namespace, metrics_mode="off", deny_keys="team") as quiet, mlflow.start_run():
        mlflow.log_metric("loss", 1.0)
        mlflow.set_tag("team", "ml")
    assert quiet.of_type("mlflow.run.metrics") == []
    assert quiet.of_type("mlflow.run.tags") == []

    with capture(**namespace, metrics_mode="every") as chatty, mlflow.start_run():
        for step in range(3):
            mlflow.log_metric("loss", 1.0, step=step)
        mlflow.set_tag("team", "ml")
    assert len(chatty.of_type("mlflow.run.metrics")) == 3
    assert chatty.of_type("mlflow.run.tags")[0].data["tags"] == {"team": "ml"}

    hook = nats_mlflow.current_hook()
    assert hook is not None
    assert hook.metrics.mode == "coalesce"  # the configured settings again, once the capture is over


# ---- g. autolog(spark=...) ------------------------------------------------------------------------------


def test_autolog_without_spark_attaches_no_listener(tracking, namespace):
    """``autolog(spark=None)`` (the default) installs the MLflow hook only and never imports the Spark integration."""
    import sys

    pytest.importorskip("sklearn")
    databricks_nats.configure(disabled=True, **namespace)
    spark_loaded = "databricks_nats.integrations.spark" in sys.modules
    try:
        databricks_nats.autolog(spark=None, silent=True)
        assert nats_mlflow.installed()
        assert ("databricks_nats.integrations.spark" in sys.modules) == spark_loaded
    finally:
        databricks_nats.autolog(disable=True, silent=True)
    assert not nats_mlflow.installed()


@pytest.mark.slow
def test_autolog_with_a_spark_session_attaches_the_spark_listeners(tracking, namespace, tmp_path):
    """``autolog(spark=session)`` attaches the Spark listeners to that session; ``disable=True`` detaches them."""
    pytest.importorskip("pyspark")
    import os
    import sys

    from pyspark.sql import SparkSession

    try:
        from databricks_nats.integrations import spark as nats_spark
    except ImportError:  # TODO: remove once databricks_nats.integrations.spark (attach/detach) has landed
        pytest.skip("databricks_nats.integrations.spark is not there yet")

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    databricks_nats.configure(disabled=True, **namespace)
    existing = SparkSession.getActiveSession()
    spark = existing or (
        SparkSession.builder.master("local[1]")
        .appName("databricks-nats-autolog")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.warehouse.dir", str(tmp_path / "warehouse"))
        .getOrCreate()
    )
    try:
        # MLflow's own Spark autologging patches SparkSession.stop to shut py4j's callback server down,
        # which can hang at the end of the run: keep it out, as the quickstart notebook does
        databricks_nats.autolog(spark=spark, silent=True, exclusive=False, exclude_flavors=["pyspark", "pyspark.ml"])
        assert nats_mlflow.installed()
        assert nats_spark.attached(spark) is not None
        databricks_nats.autolog(disable=True, spark=spark, silent=True, exclude_flavors=["pyspark", "pyspark.ml"])
        assert not nats_mlflow.installed()
        assert nats_spark.attached(spark) is None
    finally:
        mlflow.autolog(disable=True, silent=True, exclude_flavors=["pyspark", "pyspark.ml"])
        nats_spark.detach(spark)
        if existing is None:
            spark.stop()
