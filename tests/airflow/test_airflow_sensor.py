"""NatsEventSensor through dag.test(): it waits for the event and passes the CloudEvent downstream via XCom."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import databricks_nats

HERE = Path(__file__).parent


@pytest.fixture
def sensor_dags(airflow_home: Path, live: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The sensor DAG file, in the dags folder (dag.test() syncs it from there), configured by environment."""
    monkeypatch.setenv("DATABRICKS_NATS_URL", ",".join(live.url))
    monkeypatch.setenv("DATABRICKS_NATS_WORKSPACE", live.workspace)
    monkeypatch.setenv("DATABRICKS_NATS_ENV", live.env)
    monkeypatch.setenv("NATS_TEST_OUT", str(tmp_path / "deployed.json"))
    path = airflow_home / "dags" / "sensor_dags.py"
    shutil.copyfile(HERE / "dags" / "sensor_dags.py", path)
    spec = importlib.util.spec_from_file_location("sensor_dags", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(dag: Any, out: Path) -> dict[str, Any]:
    run = dag.test()
    assert run.state == "success"
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_deferrable_sensor_hands_the_event_to_xcom(sensor_dags: Any, tmp_path: Path) -> None:
    """The deferred sensor wakes on the matching event published earlier in the run; downstream reads it from XCom."""
    got = _run(sensor_dags.wait_for_champion_deferred, tmp_path / "deployed.json")
    assert got["event"]["id"] == got["promoted"]
    assert got["event"]["data"]["version"] == "12"
    assert got["event"]["type"] == "databricks.mlflow.model.alias_set"


def test_blocking_sensor_hands_the_event_to_xcom(sensor_dags: Any, tmp_path: Path) -> None:
    """With deferrable=False the sensor waits in the worker and returns the same CloudEvent."""
    got = _run(sensor_dags.wait_for_champion_blocking, tmp_path / "deployed.json")
    assert got["event"]["id"] == got["promoted"]


@pytest.mark.parametrize("mode", ["deferred", "blocking"])
def test_sensor_refuses_an_event_whose_chain_went_through_its_dag(
    sensor_dags: Any, tmp_path: Path, live: Any, mode: str
) -> None:
    """An event whose chain already went through the sensor's own DAG (the sensor passes its dag_id to the loop
    guard) is refused and reported as system.loop.detected; the sensor keeps waiting and takes the next one."""
    dag = getattr(sensor_dags, f"wait_past_a_loop_{mode}")
    got = _run(dag, tmp_path / "deployed.json")
    assert got["event"]["id"] == got["promoted"]
    assert got["event"]["data"]["version"] == "14"
    where = {"url": ",".join(live.url), "workspace": live.workspace, "env": live.env}
    with databricks_nats.subscribe("system.loop.detected", start="all", **where) as sub:
        report = sub.next(30.0).envelope["data"]
    assert report["target"] == f"airflow:dag/{dag.dag_id}"
    assert report["correlation_id"] == "loop-root"
    assert report["event_type"] == "mlflow.model.alias_set"
    assert "went through" in report["reason"]
