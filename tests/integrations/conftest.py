"""Fixtures for the MLflow hook's integration tests: real MLflow (sqlite), real nats-server, nothing mocked.

Isolation, per test:

* ``tracking``: a private clone of one migrated sqlite tracking store (migrated once per session; a copy
  costs ~30 ms, a fresh migration ~1.5 s), a private working directory (so the default artifact root is
  ``tmp_path/mlruns`` and run artifacts live at ``mlruns/<experiment>/<run>/artifacts``) and a private
  experiment.
* ``_isolated_mlflow`` (autouse): no ``DATABRICKS_NATS_*``/``MLFLOW_*`` variables leak in; afterwards any
  active run is ended, the hook is uninstalled (into a throw-away capture, never a real server), and the
  tracking URI, active experiment and async-logging switch are restored.
* ``record(**settings)``: captures events with these settings (which the hook follows: deny list,
  metrics mode), installs the hook inside the capture and returns the captured events.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest

from databricks_nats.integrations import mlflow as nats_mlflow
from databricks_nats.testing import capture

_MLFLOW_VARS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
    "MLFLOW_ENABLE_ASYNC_LOGGING",
)


@dataclass(frozen=True)
class Tracking:
    """The MLflow store of one test: its URI, its experiment and its directory."""

    uri: str
    experiment_id: str
    root: Path


@pytest.fixture(autouse=True)
def _isolated_mlflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No settings leak in or out of a test, and the hook is never left installed."""
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils

    for name in list(os.environ):
        if name.startswith("DATABRICKS_NATS_") and name != "DATABRICKS_NATS_HEALTH_INTERVAL":  # tests/conftest.py's
            monkeypatch.delenv(name)
    for name in _MLFLOW_VARS:
        monkeypatch.delenv(name, raising=False)
    from mlflow.tracking._model_registry import utils as registry_utils

    previous_uri = tracking_utils._tracking_uri
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)  # the registry follows the test's tracking URI
    yield
    with capture():  # whatever ending runs still publishes goes nowhere
        while mlflow.active_run() is not None:
            mlflow.end_run()
        nats_mlflow.uninstall()
    mlflow.set_tracking_uri(previous_uri)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sqlite tracking store with MLflow's schema, migrated once for the session (cloned per test)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = tmp_path_factory.mktemp("mlflow-template")
    db = root / "template.db"
    store = SqlAlchemyStore(f"sqlite:///{db}", str(root / "mlruns"))
    store.engine.dispose()
    return db


@pytest.fixture
def tracking(mlflow_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tracking:
    """This test's own sqlite tracking store (a clone of the template), working directory and experiment."""
    db = tmp_path / "mlflow.db"
    shutil.copyfile(mlflow_template, db)
    monkeypatch.chdir(tmp_path)  # the sqlite store's default artifact root is ./mlruns
    uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment("integration")
    return Tracking(uri, experiment.experiment_id, tmp_path)


@pytest.fixture
def subject_of(namespace: dict[str, str]) -> Callable[..., str]:
    """The subject an MLflow event must have: ``dbx.<workspace>.<env>.mlflow.<entity>.<keys…>.<action>``."""

    def subject(entity: str, *tokens: str) -> str:
        return ".".join(["dbx", namespace["workspace"], namespace["env"], "mlflow", entity, *tokens])

    return subject


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    """Poll a condition until it holds or ``timeout`` passes; return its last value (for eventual checks)."""

    def wait(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        value = condition()
        while not value and time.monotonic() < deadline:
            time.sleep(0.02)
            value = condition()
        return value

    return wait
