"""Fixtures of the fault suite: a private MLflow store for the tests that train (R1, R4, R7)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from databricks_nats.testing import capture


@pytest.fixture
def mlflow_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[str]:
    """A private sqlite tracking store and registry and working directory; autologging and the hook go afterwards."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from databricks_nats.integrations import mlflow as nats_mlflow

    for name in list(os.environ):
        if name.startswith(("DATABRICKS_NATS_", "MLFLOW_")):
            monkeypatch.delenv(name)
    previous_uri = tracking_utils._tracking_uri
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
