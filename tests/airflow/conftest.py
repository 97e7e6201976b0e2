"""Airflow integration tests: they run in their own environment (``.ci/airflow.sh``), against real Airflow.

Without Airflow installed (the main test environment) nothing here is collected: Airflow's dependency set
is large and must not constrain the core, so the main suite does not install it. ``.ci/airflow.sh`` sets
``DATABRICKS_NATS_AIRFLOW_TESTS=1``; there a missing Airflow is an error, never a silent skip.

Airflow reads its configuration when first imported, so this file points ``AIRFLOW_HOME`` (SQLite
metadata database, no example DAGs) at a temporary directory before any test module imports Airflow.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

_REQUIRED = os.environ.get("DATABRICKS_NATS_AIRFLOW_TESTS") == "1"


def _installed(distribution: str) -> bool:
    # By distribution, not find_spec("airflow"): under pytest the tests/ directory is on sys.path, where
    # this very directory passes for a namespace package named airflow.
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


_MISSING = [d for d in ("apache-airflow", "apache-airflow-providers-common-messaging") if not _installed(d)]
if not _MISSING:  # before anything imports airflow
    _HOME = Path(tempfile.mkdtemp(prefix="dbx-nats-airflow-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(_HOME),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(_HOME / "dags"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_HOME / "logs"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        }
    )
    (_HOME / "dags").mkdir()
    atexit.register(shutil.rmtree, _HOME, True)

if _MISSING and _REQUIRED:
    raise RuntimeError(f"the Airflow test environment lacks {_MISSING}: build it with .ci/airflow.sh <venv>")
if _MISSING:
    collect_ignore_glob = ["test_*.py"]  # the main environment: not collected at all (not skipped)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's AIRFLOW_HOME with a migrated SQLite metadata database (``airflow db migrate``, once)."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return _HOME


@pytest.fixture
def airflow_db_copy(airflow_home: Path, tmp_path: Path) -> Any:
    """A private copy of the migrated database, for tests that run Airflow components of their own."""
    target = tmp_path / "airflow.db"
    shutil.copyfile(airflow_home / "airflow.db", target)
    return target


@pytest.fixture
def live(nats_server: Any, namespace: dict[str, str], tmp_path: Path) -> Any:
    """Process-wide publishing into this test's own namespace on the module's real server, stream created."""
    import databricks_nats

    settings = databricks_nats.configure(url=nats_server.url, spool_dir=str(tmp_path / "spool"), **namespace)
    databricks_nats.ensure_stream()
    return settings


@pytest.fixture
def consumer_ready() -> Any:
    """``await consumer_ready(settings, durable)``: returns once that durable consumer exists (bounded)."""

    async def wait(settings: Any, durable: str, timeout: float = 60.0) -> None:
        import asyncio

        from databricks_nats.transport import reader

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            nc = await reader.connect(settings, "test")
            try:
                await nc.jetstream().consumer_info(settings.stream_name, durable)
                return
            except Exception:
                if loop.time() > deadline:
                    raise
            finally:
                await nc.close()
            await asyncio.sleep(0.1)

    return wait
