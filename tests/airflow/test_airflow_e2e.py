"""End to end: a real scheduler, triggerer, dag-processor and api-server turn a NATS event into a DAG run.

The components load the listener plugin through the package's ``airflow.plugins`` entry point, so the listener is
there; it publishes only where it is switched on (``[databricks_nats] listener = True``). Providers are discovered
eagerly (``lazy_discover_providers = False``: the plugin is still loaded once) except in the lifecycle test, which
keeps Airflow's default (lazy).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import databricks_nats
from databricks_nats.integrations.airflow import NatsEventTrigger
from tests.processes import Processes, free_port

HERE = Path(__file__).parent
COMPONENTS = {
    "dag-processor": ["dag-processor"],
    "scheduler": ["scheduler"],
    "triggerer": ["triggerer"],
    "api-server": ["api-server", "--apps", "execution", "--workers", "1", "--host", "127.0.0.1", "--port"],
}


class Airflow(Processes):
    """Airflow components as separate processes on one AIRFLOW_HOME."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        super().__init__(home, env)
        self.home = home

    def start_components(self) -> None:
        port = self.env["AIRFLOW__API__PORT"]
        for name, args in COMPONENTS.items():
            self.start(name, [sys.executable, "-m", "airflow", *args, *([port] if name == "api-server" else [])])

    def task_logs(self, tail: int = 6000) -> str:
        files = sorted((self.home / "logs").glob("dag_id=*/**/*.log"))
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-tail:]}" for f in files)


@pytest.fixture
def start_airflow(airflow_db_copy: Path, live: Any, tmp_path: Path) -> Iterator[Any]:
    """``start_airflow(dag_file, **env)``: scheduler, triggerer, dag-processor and api-server (SQLite,
    LocalExecutor) with that DAG file and the provider's plugin loaded; stopped at the end of the test."""
    started: list[Airflow] = []

    def start(dag_file: str, **extra_env: str) -> Airflow:
        components = Airflow(*_setup(airflow_db_copy, live, tmp_path, dag_file, extra_env))
        started.append(components)
        components.start_components()
        return components

    try:
        yield start
    finally:
        for components in started:
            components.stop()


@pytest.fixture
def airflow(start_airflow: Any) -> Airflow:
    """The components with the deploy DAG, the listener not switched on."""
    return start_airflow("deploy_champion_dag.py")  # type: ignore[no-any-return]


def _setup(
    airflow_db_copy: Path, live: Any, tmp_path: Path, dag_file: str | Path, extra_env: dict[str, str]
) -> tuple[Path, dict[str, str]]:
    """AIRFLOW_HOME and the components' environment, with one DAG file (a name in ``dags/``, or a path)."""
    from cryptography.fernet import Fernet

    home = tmp_path / "home"
    dags = tmp_path / "dags"
    home.mkdir()
    dags.mkdir()
    source = Path(dag_file) if Path(dag_file).is_absolute() else HERE / "dags" / dag_file
    shutil.copyfile(source, dags / source.name)
    port = str(free_port())
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
        "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "False",  # eager; the lifecycle test keeps the default (lazy)
        "DATABRICKS_NATS_SPOOL_DIR": str(tmp_path / "airflow-spool"),
        **extra_env,
    }
    for name in (
        "DATABRICKS_NATS_AIRFLOW_TESTS",
        "DATABRICKS_NATS_AIRFLOW_LISTENER",
        "AIRFLOW__DATABRICKS_NATS__LISTENER",
    ):
        env.pop(name, None)
    env.update(extra_env)
    return home, env


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
    # The listener is loaded (the provider's plugin) but not switched on: nothing of Airflow's on NATS.
    assert [e["type"] for e in stream_events(live) if "airflow." in e["type"]] == []


def stream_events(live: Any, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Every event in the test's stream, in order (read until ``timeout`` s pass without one)."""
    out = []
    where = {"url": ",".join(live.url), "workspace": live.workspace, "env": live.env}
    with databricks_nats.subscribe(start="all", dedupe=False, hop_limit=1000, **where) as sub:
        while True:
            try:
                out.append(sub.next(timeout).envelope)
            except TimeoutError:
                return out


def _of(events: list[dict[str, Any]], event_type: str, **data: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["type"].removeprefix("databricks.") == event_type and all(e["data"].get(k) == v for k, v in data.items())
    ]


def _cause(event: dict[str, Any]) -> tuple[Any, ...]:
    """An envelope's causation attributes: causationid, correlationid, hop, via."""
    return (event.get("causationid"), event.get("correlationid"), event.get("hop"), event.get("via"))


def _dag_runs(db: Path, dag_id: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [str(r[0]) for r in conn.execute("SELECT state FROM dag_run WHERE dag_id = ?", (dag_id,))]


@pytest.mark.slow
def test_runs_publish_back_with_the_causation_of_their_event_and_a_loop_is_cut(
    start_airflow: Any, airflow_db_copy: Path, live: Any, consumer_ready: Any
) -> None:
    """An alias_set event runs a DAG whose task and run events, and the event its publish operator sends through
    the nats connection, carry the alias event's causation; a DAG triggered by its own task's success runs once
    and the loop is announced as system.loop.detected."""
    from airflow.sdk import Asset

    where = {"url": ",".join(live.url), "workspace": live.workspace, "env": live.env}
    connection = {"conn_type": "nats", "host": where["url"], "extra": {"workspace": live.workspace, "env": live.env}}
    airflow = start_airflow(
        "publish_back_dags.py",
        AIRFLOW__DATABRICKS_NATS__LISTENER="True",  # Airflow config: [databricks_nats] listener = True
        AIRFLOW__API__BASE_URL="http://airflow.example:8080/",
        AIRFLOW_CONN_NATS_DEFAULT=json.dumps(connection),
    )
    durables = [
        NatsEventTrigger(
            event_type="mlflow.model.alias_set", match={"name": "main.ml.churn", "alias": "champion"}, **where
        ).durable,
        NatsEventTrigger(
            event_type="mlflow.model.alias_set", match={"name": "main.ml.echo", "alias": "champion"}, **where
        ).durable,
        NatsEventTrigger(event_type="airflow.task.success", match={"dag_id": "echo"}, **where).durable,
    ]

    def consumers_exist() -> bool:
        try:
            for durable in durables:
                asyncio.run(consumer_ready(live, durable, timeout=0))
            return True
        except Exception:
            return False

    _wait("the triggerer did not create the durable consumers", consumers_exist, airflow, 240)
    churn = databricks_nats.emit(
        "mlflow.model.alias_set", {"name": "main.ml.churn", "alias": "champion", "version": "4"}
    )
    echo = databricks_nats.emit("mlflow.model.alias_set", {"name": "main.ml.echo", "alias": "champion", "version": "1"})
    assert churn is not None
    assert echo is not None
    assert databricks_nats.flush(timeout=10).ok

    def published() -> list[dict[str, Any]] | None:
        events = stream_events(live, timeout=0.5)
        done = _of(events, "airflow.dag_run.success", dag_id="deploy_and_announce")
        return events if done and _of(events, "system.loop.detected") else None

    events = _wait("no dag_run.success of deploy_and_announce and no loop report", published, airflow, 240)

    expected = (churn.id, churn.id, 1, "airflow:dag/deploy_and_announce")
    tasks = _of(events, "airflow.task.success", dag_id="deploy_and_announce")
    assert sorted(e["data"]["task_id"] for e in tasks) == ["announce", "deploy"], airflow.task_logs()
    for event in tasks + _of(events, "airflow.dag_run.success", dag_id="deploy_and_announce"):
        assert _cause(event) == expected, event
    deploy = next(e["data"] for e in tasks if e["data"]["task_id"] == "deploy")
    assert deploy["try_number"] == 1
    assert deploy["state"] == "success"
    assert deploy["assets"] == [Asset(name="churn_endpoint", uri="serving://churn").uri]
    assert deploy["url"].startswith("http://airflow.example:8080/dags/deploy_and_announce/runs/")
    assert deploy["url"].split("?")[0].endswith("/tasks/deploy")
    running = _of(events, "airflow.task.running", dag_id="deploy_and_announce", task_id="deploy")
    assert [_cause(e) for e in running] == [expected]
    # The publish operator's event went through the nats_default connection and carries the same causation.
    announced = _of(events, "myteam.deploy.done")
    assert [_cause(e) for e in announced] == [expected]
    assert announced[0]["data"]["run_id"] == deploy["run_id"]

    # The loop: echo ran once (on the alias event); its task's success came back to its own trigger and was refused.
    echoed = _of(events, "airflow.task.success", dag_id="echo")
    assert [_cause(e) for e in echoed] == [(echo.id, echo.id, 1, "airflow:dag/echo")]
    [loop] = _of(events, "system.loop.detected")
    assert loop["data"]["event_id"] == echoed[0]["id"]
    assert loop["data"]["target"] == "airflow:dag/echo"
    assert loop["data"]["correlation_id"] == echo.id
    assert _dag_runs(airflow_db_copy, "echo") == ["success"]


def _try(events: list[dict[str, Any]], event_type: str, task_id: str) -> list[tuple[str, int]]:
    return [(e["data"]["state"], e["data"]["try_number"]) for e in _of(events, event_type, task_id=task_id)]


@pytest.mark.slow
def test_failure_retry_and_skip_are_published_and_a_loop_without_dag_ids_stops_at_the_hop_limit(
    start_airflow: Any, airflow_db_copy: Path, live: Any, assert_valid_event: Any
) -> None:
    """With lazy provider discovery (Airflow's default: the listener comes through the ``airflow.plugins`` entry
    point), a task that fails, is retried and fails again publishes running/up_for_retry (try 1) then
    running/failed (try 2), a task that skips itself publishes skipped, and the run publishes dag_run.failed; two
    DAGs triggering each other with triggers that know no DAG (so only the hop limit applies) and hop_limit 3
    run exactly three times (ping, pong, ping), and the cut is announced once as system.loop.detected."""
    airflow = start_airflow(
        "lifecycle_dags.py",
        AIRFLOW__DATABRICKS_NATS__LISTENER="True",
        AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS="True",
    )
    where = {"url": ",".join(live.url), "workspace": live.workspace, "env": live.env}
    durables = [
        NatsEventTrigger(event_type="mlflow.model.alias_set", match={"name": name, "alias": "champion"}, **where)
        for name in ("main.ml.flaky", "main.ml.pingpong")
    ] + [
        NatsEventTrigger(event_type="airflow.task.success", match={"dag_id": dag}, settings={"hop_limit": 3}, **where)
        for dag in ("ping", "pong")
    ]

    def consumers_exist() -> bool:
        return all(_consumer_exists(live, t.durable) for t in durables)

    _wait("the triggerer did not create the durable consumers", consumers_exist, airflow, 240)
    flaky = databricks_nats.emit(
        "mlflow.model.alias_set", {"name": "main.ml.flaky", "alias": "champion", "version": "1"}
    )
    kick = databricks_nats.emit(
        "mlflow.model.alias_set", {"name": "main.ml.pingpong", "alias": "champion", "version": "1"}
    )
    assert flaky is not None
    assert kick is not None
    assert databricks_nats.flush(timeout=10).ok

    def published() -> list[dict[str, Any]] | None:
        events = stream_events(live, timeout=0.5)
        failed = _of(events, "airflow.dag_run.failed", dag_id="fail_retry_skip")
        ran = len(_of(events, "airflow.dag_run.success", dag_id="ping")) + len(
            _of(events, "airflow.dag_run.success", dag_id="pong")
        )
        return events if failed and ran == 3 and _of(events, "system.loop.detected") else None

    events = _wait("no dag_run.failed, three ping/pong runs and a loop report", published, airflow, 300)
    for event in events:
        if event["type"].removeprefix("databricks.").startswith(("airflow.", "system.loop")):
            assert_valid_event(event)

    # Failure, retry, skip: the states Airflow 3.3's task runner reports to the listener, with the try numbers.
    failing = [e for e in events if e["data"].get("dag_id") == "fail_retry_skip" and "task_id" in e["data"]]
    assert _try(failing, "airflow.task.running", "flaky") == [("running", 1), ("running", 2)], airflow.task_logs()
    assert _try(failing, "airflow.task.up_for_retry", "flaky") == [("up_for_retry", 1)]
    assert _try(failing, "airflow.task.failed", "flaky") == [("failed", 2)]
    assert _try(failing, "airflow.task.skipped", "skipper") == [("skipped", 1)]
    assert _try(failing, "airflow.task.success", "flaky") + _try(failing, "airflow.task.success", "skipper") == []
    cause = (flaky.id, flaky.id, 1, "airflow:dag/fail_retry_skip")
    run_events = _of(events, "airflow.dag_run.running", dag_id="fail_retry_skip")
    [run_failed] = _of(events, "airflow.dag_run.failed", dag_id="fail_retry_skip")
    assert [e["data"]["state"] for e in run_events] == ["running"]
    assert run_failed["data"]["state"] == "failed"
    assert run_failed["data"]["assets"] == []
    for event in [*failing, *run_events, run_failed]:
        assert _cause(event) == cause, event
    assert _dag_runs(airflow_db_copy, "fail_retry_skip") == ["failed"]

    # The loop: ping (hop 1), pong (hop 2), ping (hop 3); pong refuses ping's hop-3 success.
    hops = [
        (e["data"]["dag_id"], e["hop"])
        for e in events
        if e["type"].removeprefix("databricks.") == "airflow.task.success" and e["data"]["dag_id"] in ("ping", "pong")
    ]
    assert hops == [("ping", 1), ("pong", 2), ("ping", 3)]
    [loop] = _of(events, "system.loop.detected")
    assert loop["data"]["event_id"] == _of(events, "airflow.task.success", dag_id="ping")[-1]["id"]
    assert loop["data"]["correlation_id"] == kick.id
    assert loop["data"]["hop"] == 3
    assert loop["data"]["target"] is None
    assert "hop limit 3" in loop["data"]["reason"]
    assert loop["data"]["via"] == ["airflow:dag/ping", "airflow:dag/pong", "airflow:dag/ping"]
    assert (_dag_runs(airflow_db_copy, "ping"), _dag_runs(airflow_db_copy, "pong")) == (["success"] * 2, ["success"])
    # Counted and logged by the guard in the triggerer (the one refusal: pong's trigger, hop 3).
    refusals = [line for line in airflow.logs("triggerer", 10**8).splitlines() if "not acting on event" in line]
    assert len(refusals) == 1, refusals
    assert loop["data"]["event_id"] in refusals[0]
    assert "hop limit 3 reached" in refusals[0]


def _consumer_exists(live: Any, durable: str | None) -> bool:
    from databricks_nats.transport import reader

    async def check() -> bool:
        nc = await reader.connect(live, "test")
        try:
            await nc.jetstream().consumer_info(live.stream_name, durable)
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    return asyncio.run(check())
