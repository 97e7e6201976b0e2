"""End to end across orchestrators: MLflow alias event → Airflow DAG → NATS → Prefect deployment → NATS.

Real parts only: a nats-server, Airflow 3 (scheduler, triggerer, dag-processor, api-server, LocalExecutor,
the provider's listener switched on) in this venv, and in the Prefect venv (``DATABRICKS_NATS_PREFECT_PYTHON``)
a Prefect server (``prefect server start``), the deployment served by ``flow.serve`` (``chain_flow.py``),
``databricks-nats prefect-bridge --deployment`` and ``databricks-nats prefect-forward``. Every assertion reads
the stream (and what the flow was given): the chain keeps the alias event's correlation id, one hop per
orchestrator, and names both in ``via``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import databricks_nats
from databricks_nats.integrations.airflow import NatsEventTrigger
from tests.processes import Processes, free_port

HERE = Path(__file__).parent
DAG = "score_with_champion"
FLOW = "databricks-nats-chain"  # chain_flow.py's flow
DEPLOYMENT = "chain"


@pytest.fixture
def prefect(prefect_python: Path, live: Any, tmp_path: Path) -> Iterator[Processes]:
    """The Prefect side's environment (a fresh PREFECT_HOME, the test's NATS namespace); stopped at the end."""
    home = tmp_path / "prefect"
    home.mkdir()
    shutil.copyfile(HERE / "chain_flow.py", home / "chain_flow.py")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PREFECT_", "DATABRICKS_NATS_"))},
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # the served deployment picks its flow run up within a second
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
        "PYTHONDONTWRITEBYTECODE": "1",
        "DATABRICKS_NATS_URL": ",".join(live.url),
        "DATABRICKS_NATS_WORKSPACE": live.workspace,
        "DATABRICKS_NATS_ENV": live.env,
        "DATABRICKS_NATS_SPOOL_DIR": str(home / "spool"),
        "CHAIN_FLOW_OUT": str(tmp_path / "flow.json"),
    }
    procs = Processes(home, env)
    procs.start("prefect-server", [str(prefect_python), "-m", "prefect", "server", "start", "--no-ui"])
    try:
        yield procs
    finally:
        procs.stop()


def _wait(what: str, check: Callable[[], Any], timeout: float, *sides: Any) -> Any:
    """Poll ``check`` until it returns something truthy; fail with every process's log after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for side in sides:
            side.check_alive()
        result = check()
        if result:
            return result
        time.sleep(0.5)
    logs = "\n".join(f"--- {name}\n{side.logs(name)}" for side in sides for name in side.procs)
    raise AssertionError(f"{what} within {timeout:g} s\n{logs}")


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - http://127.0.0.1 of the test
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_alias_event_runs_a_dag_whose_success_runs_a_prefect_deployment_one_chain_on_nats(
    airflow_db_copy: Path,
    live: Any,
    consumer_ready: Any,
    prefect: Processes,
    prefect_python: Path,
    e2e: Any,
    tmp_path: Path,
) -> None:
    """alias_set → Airflow DAG run → ``airflow.task.success`` (hop 1) → Prefect flow run through the bridge →
    ``prefect.flow_run.completed`` (hop 2): one correlation id, each event caused by the one before it."""
    listener_on = {"AIRFLOW__DATABRICKS_NATS__LISTENER": "True"}
    airflow = e2e.Airflow(*e2e._setup(airflow_db_copy, live, tmp_path, HERE / "dags" / "chain_dag.py", listener_on))
    airflow.start_components()
    try:
        _prefect_side(prefect, prefect_python, airflow)
        trigger = NatsEventTrigger(
            event_type="mlflow.model.alias_set",
            match={"name": "main.ml.chain", "alias": "champion"},
            dag_id=DAG,
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

        _wait("the triggerer did not create the durable consumer", consumer_exists, 240, airflow, prefect)
        alias = databricks_nats.emit(
            "mlflow.model.alias_set", {"name": "main.ml.chain", "alias": "champion", "version": "3"}
        )
        assert alias is not None
        assert databricks_nats.flush(timeout=10).ok

        def completed() -> list[dict[str, Any]] | None:
            events = e2e.stream_events(live, timeout=0.5)
            return events if e2e._of(events, "prefect.flow_run.completed", deployment_name=DEPLOYMENT) else None

        _wait("no prefect.flow_run.completed of the deployment on NATS", completed, 240, airflow, prefect)
        prefect.stop()  # bridge and forwarder first (reverse start order): nothing more can be published
        events = e2e.stream_events(live)
    finally:
        airflow.stop()

    # Airflow: the alias event ran the DAG, whose task success is caused by it (hop 1, via the DAG).
    [succeeded] = e2e._of(events, "airflow.task.success", dag_id=DAG)
    assert succeeded["data"]["task_id"] == "score"
    assert e2e._cause(succeeded) == (alias.id, alias.id, 1, f"airflow:dag/{DAG}")
    # Prefect: that event ran the deployment once, with the Airflow run's fields as its parameters ...
    assert json.loads((tmp_path / "flow.json").read_text()) == {
        "dag_id": DAG,
        "task_id": "score",
        "run_id": succeeded["data"]["run_id"],
    }
    # ... and its completion is caused by Airflow's event, in the alias event's chain: hop 2, via both.
    [done] = e2e._of(events, "prefect.flow_run.completed", deployment_name=DEPLOYMENT)
    assert done["data"]["flow_name"] == FLOW
    assert done["data"]["state_type"] == "COMPLETED"
    chain = f"airflow:dag/{DAG},prefect:deployment/{FLOW}/{DEPLOYMENT}"
    assert e2e._cause(done) == (succeeded["id"], alias.id, 2, chain)
    running = e2e._of(events, "prefect.flow_run.running", flow_run_id=done["data"]["flow_run_id"])
    assert [e2e._cause(e) for e in running] == [(succeeded["id"], alias.id, 2, chain)]
    assert e2e._of(events, "system.loop.detected") == []  # nothing in the chain was refused


def _prefect_side(prefect: Processes, python: Path, airflow: Any) -> None:
    """Prefect server up, the deployment served, then the bridge (Airflow's task success → the deployment,
    its run's fields as parameters) and the forwarder (Prefect state changes → NATS)."""
    api = prefect.env["PREFECT_API_URL"]
    _wait("the Prefect server did not answer", lambda: _get(f"{api}/health"), 180, prefect, airflow)
    prefect.start("serve", [str(python), "chain_flow.py", DEPLOYMENT], cwd=prefect.dir)
    deployment = f"{api}/deployments/name/{FLOW}/{DEPLOYMENT}"
    _wait("flow.serve did not register the deployment", lambda: _get(deployment), 120, prefect, airflow)
    cli = str(python.parent / "databricks-nats")
    prefect.start(
        "bridge",
        [cli, "prefect-bridge", "--deployment", f"{FLOW}/{DEPLOYMENT}", "--type", "airflow.task.success",
         "--match", f"dag_id={DAG}", "--start", "all",
         "--param", "dag_id=dag_id", "--param", "task_id=task_id", "--param", "run_id=run_id"],
    )  # fmt: skip
    prefect.start(
        "forward",
        [cli, "prefect-forward", "--state-file", str(prefect.dir / "forward-state.json"), "--sweep-interval", "2"],
    )
