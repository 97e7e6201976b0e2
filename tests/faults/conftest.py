"""Shared by the fault suite: a private MLflow store for the tests that train (R1, R4, R7), an emitting loop."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from databricks_nats.model.events import new_event
from databricks_nats.testing import capture


@contextlib.contextmanager
def training_loop(transport: Any, run_id: str) -> Iterator[list[str]]:
    """A thread emitting one metrics event a millisecond through ``transport``; yields the ids in emit order."""
    ids: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        i = 0
        while not stop.is_set():
            data = {"experiment_id": "1", "run_id": run_id, "metrics": {"step": i}, "points": 1, "final": False}
            ev = new_event("mlflow.run.metrics", data)
            ids.append(ev.id)
            transport.emit(ev)
            i += 1
            time.sleep(0.001)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield ids
    finally:
        stop.set()
        thread.join(10)


@pytest.fixture
def mlflow_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[str]:
    """A private sqlite tracking store and registry and working directory; autologging and the hook go afterwards."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from databricks_nats.integrations import mlflow as nats_mlflow

    for name in list(os.environ):
        if name.startswith(("DATABRICKS_NATS_", "MLFLOW_")) and name != "DATABRICKS_NATS_HEALTH_INTERVAL":
            monkeypatch.delenv(name)
    previous_uri = tracking_utils._tracking_uri
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)  # restored afterwards
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(request.module.__name__.rpartition(".")[2])
    yield uri
    with capture():  # whatever ending runs still publishes goes nowhere
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.autolog(disable=True)
        nats_mlflow.uninstall()
    mlflow.set_tracking_uri(previous_uri)
