"""End to end: a real scheduler, triggerer, dag-processor and api-server turn a NATS event into a DAG run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import databricks_nats
from databricks_nats.integrations.airflow import NatsEventTrigger

HERE = Path(__file__).parent
COMPONENTS = {
    "dag-processor": ["dag-processor"],
    "scheduler": ["scheduler"],
    "triggerer": ["triggerer"],
    "api-server": ["api-server", "--apps", "execution", "--workers", "1", "--host", "127.0.0.1", "--port"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Airflow:
    """Airflow components as separate processes on one AIRFLOW_HOME; stopped with terminate → wait → kill."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        port = self.env["AIRFLOW__API__PORT"]
        for name, args in COMPONENTS.items():
            argv = [sys.executable, "-m", "airflow", *args, *([port] if name == "api-server" else [])]
            log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - closed by the child's exit
            self.procs[name] = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            log.close()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{self.logs(name)}"

    def logs(self, name: str, tail: int = 4000) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")[-tail:]

    def task_logs(self, tail: int = 6000) -> str:
        files = sorted((self.home / "logs").glob("dag_id=*/**/*.log"))
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-tail:]}" for f in files)

    def stop(self) -> None:
        for proc in self.procs.values():  # the whole session: LocalExecutor workers, api-server workers
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            with contextlib.suppress(ProcessLookupError):  # children left behind by a component that exited
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def airflow(airflow_db_copy: Path, live: Any, tmp_path: Path) -> Iterator[Airflow]:
    """Scheduler, triggerer, dag-processor and api-server (SQLite, LocalExecutor) with the deploy DAG."""
    from cryptography.fernet import Fernet

    home = tmp_path / "home"
    dags = tmp_path / "dags"
    home.mkdir()
    dags.mkdir()
    shutil.copyfile(HERE / "dags" / "deploy_champion_dag.py", dags / "deploy_champion_dag.py")
    port = str(_free_port())
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_db_copy}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__PORT": port,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "DATABRICKS_NATS_URL": ",".join(live.url),
        "DATABRICKS_NATS_WORKSPACE": live.workspace,
        "DATABRICKS_NATS_ENV": live.env,
        "NATS_TEST_OUT": str(tmp_path / "deployed.json"),
    }
    env.pop("DATABRICKS_NATS_AIRFLOW_TESTS", None)
    components = Airflow(home, env)
    try:
        components.start()
        yield components
    finally:
        components.stop()


def _wait(what: str, check: Any, airflow: Airflow, timeout: float) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the components' logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        airflow.check_alive()
        result = check()
        if result:
            return result
        time.sleep(0.25)
    logs = "\n".join(f"--- {name}\n{airflow.logs(name)}" for name in airflow.procs)
    raise AssertionError(f"{what} within {timeout:g} s\n{logs}")


def _asset_runs(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT dr.state, dr.run_type, ae.extra FROM dag_run dr"
            " JOIN dagrun_asset_event dae ON dae.dag_run_id = dr.id"
            " JOIN asset_event ae ON ae.id = dae.event_id"
            " WHERE dr.dag_id = 'deploy_churn_champion'"
        ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


@pytest.mark.slow
def test_alias_set_event_runs_the_asset_watched_dag(
    airflow: Airflow, airflow_db_copy: Path, live: Any, consumer_ready: Any, tmp_path: Path
) -> None:
    """A published model.alias_set to champion becomes an asset-triggered DAG run whose task sees the CloudEvent."""
    trigger = NatsEventTrigger(
        event_type="mlflow.model.alias_set",
        match={"name": "main.ml.churn", "alias": "champion"},
        url=",".join(live.url),
        workspace=live.workspace,
        env=live.env,
    )

    def consumer_exists() -> bool:
        try:
            asyncio.run(consumer_ready(live, trigger.durable, timeout=0))
            return True
        except Exception:
            return False

    _wait("the triggerer did not create the durable consumer", consumer_exists, airflow, 240)
    databricks_nats.emit("mlflow.model.alias_set", {"name": "main.ml.churn", "alias": "challenger", "version": "8"})
    event = databricks_nats.emit(
        "mlflow.model.alias_set", {"name": "main.ml.churn", "alias": "champion", "version": "9"}
    )
    assert event is not None
    assert databricks_nats.flush(timeout=10).ok

    runs = _wait("no asset-triggered DAG run", lambda: _asset_runs(airflow_db_copy), airflow, 120)
    assert [(kind, json.loads(extra)["payload"]["id"]) for _, kind, extra in runs] == [("asset_triggered", event.id)]

    def finished() -> str | None:
        state = _asset_runs(airflow_db_copy)[0][0]
        return state if state in ("success", "failed") else None

    state = _wait("the DAG run did not finish", finished, airflow, 180)
    assert state == "success", airflow.task_logs()
    out = tmp_path / "deployed.json"
    deployed = json.loads(out.read_text())
    assert [e["id"] for e in deployed] == [event.id]
    assert deployed[0]["data"]["version"] == "9"
