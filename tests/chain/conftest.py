"""The chain across orchestrators (issue 16): run in the Airflow venv, with the Prefect side in the Prefect venv.

Airflow and Prefect cannot share an environment (their dependencies clash), so ``.ci/chain.sh`` runs these
tests with the Airflow venv's python and names the Prefect venv's python in ``DATABRICKS_NATS_PREFECT_PYTHON``;
the Prefect server, the deployment's runner, the bridge and the forwarder run as its subprocesses.

The Airflow side reuses tests/airflow: its conftest (loaded here by path, before anything imports Airflow: it
points ``AIRFLOW_HOME`` at a temporary directory) gives the migrated database and the ``live`` namespace.
Without Airflow (the main environment) nothing here is collected; with ``DATABRICKS_NATS_AIRFLOW_TESTS=1``
(set by .ci/chain.sh) a missing Airflow is an error, and a missing Prefect python fails the test.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

AIRFLOW_TESTS = Path(__file__).parent.parent / "airflow"


def load(path: Path, name: str) -> ModuleType:
    """Import a file of tests/airflow under a name of its own (its folder is no package and shadows ``airflow``)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None, path
    assert spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _airflow_installed() -> bool:
    try:
        importlib.metadata.distribution("apache-airflow")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


if _airflow_installed() or os.environ.get("DATABRICKS_NATS_AIRFLOW_TESTS") == "1":
    _airflow = load(AIRFLOW_TESTS / "conftest.py", "chain_airflow_conftest")  # raises when Airflow is required
    airflow_home = _airflow.airflow_home
    airflow_db_copy = _airflow.airflow_db_copy
    live = _airflow.live
    consumer_ready = _airflow.consumer_ready

    @pytest.fixture(scope="session")
    def e2e() -> ModuleType:
        """tests/airflow/test_airflow_e2e.py: its ``Airflow`` components, ``stream_events``, ``_of``, ``_cause``."""
        return load(AIRFLOW_TESTS / "test_airflow_e2e.py", "chain_airflow_e2e")

else:
    collect_ignore_glob = ["test_*.py"]  # the main environment: not collected at all (not skipped)


@pytest.fixture
def prefect_python() -> Path:
    """The Prefect venv's python (``DATABRICKS_NATS_PREFECT_PYTHON``) and its ``databricks-nats`` next to it."""
    given = os.environ.get("DATABRICKS_NATS_PREFECT_PYTHON", "")
    if not given:
        pytest.fail(
            "DATABRICKS_NATS_PREFECT_PYTHON is not set: the chain test drives Prefect from its own venv; "
            "run it with .ci/chain.sh <Airflow venv> <Prefect venv>/bin/python"
        )
    python = Path(os.path.abspath(given))  # not resolved: a venv's python is a symlink to the base interpreter
    if not os.access(python, os.X_OK) or not (python.parent / "databricks-nats").exists():
        pytest.fail(
            f"DATABRICKS_NATS_PREFECT_PYTHON={given} is not a venv python with databricks-nats installed: "
            "build it with .ci/prefect.sh <venv> and run .ci/chain.sh <Airflow venv> <venv>/bin/python"
        )
    return python
