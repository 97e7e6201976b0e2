"""The bridge against a real nats-server and a real Prefect server: events arrive as Prefect events, durably."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import databricks_nats
from databricks_nats.prefect import bridge

ROOT = Path(__file__).resolve().parents[2]


def _publish(event_type: str, data: dict[str, Any], count: int = 1) -> list[str]:
    ids = []
    for _ in range(count):
        event = databricks_nats.emit(event_type, data)
        assert event is not None
        ids.append(event.id)
    assert databricks_nats.flush(timeout=10).ok
    return ids


def _versions(name: str, first: int, count: int) -> list[str]:
    ids = []
    for v in range(first, first + count):
        ids += _publish("mlflow.model.version_created", {"name": name, "version": str(v), "run_id": f"run{v}"})
    return ids


def test_bridged_events_reach_prefect_with_stable_resources(live: dict[str, str], read_prefect_events: Any) -> None:
    """Each NATS event becomes one Prefect event named by its type, on its family's resource, with the CloudEvent."""
    [alias_id] = _publish("mlflow.model.alias_set", {"name": "main.ml.churn", "alias": "champion", "version": "3"})
    [run_id] = _publish(
        "mlflow.run.finished",
        {"experiment_id": "7", "run_id": "abc123", "run_name": "nightly", "status": "FINISHED", "metrics": {}},
    )
    result = bridge(start="all", max_events=2, idle_timeout=60, **live)
    assert list(result.ids) == [alias_id, run_id]

    events = read_prefect_events({"databricks.workspace": live["workspace"]}, at_least=2)
    by_id = {str(e.id): e for e in events}
    assert sorted(by_id) == sorted([alias_id, run_id])

    alias = by_id[alias_id]
    assert alias.event == "databricks.mlflow.model.alias_set"
    assert alias.resource.id == "databricks.mlflow.model.main.ml.churn"
    assert alias.resource["databricks.data.alias"] == "champion"
    assert alias.resource["databricks.env"] == live["env"]
    assert alias.payload["id"] == alias_id
    assert alias.payload["type"] == "databricks.mlflow.model.alias_set"
    assert alias.payload["data"]["version"] == "3"

    run = by_id[run_id]
    assert run.event == "databricks.mlflow.run.finished"
    assert run.resource.id == "databricks.mlflow.run.abc123"
    assert run.resource.name == "nightly"
    roles = {r.role: r.id for r in run.related}
    assert roles["experiment"] == "databricks.mlflow.experiment.7"
    assert roles["workspace"] == f"databricks.workspace.{live['workspace']}"


def test_durable_bridge_resumes_after_restart(live: dict[str, str], read_prefect_events: Any) -> None:
    """Events published while the bridge is stopped are bridged when it restarts: all of them, none twice."""
    first = _versions("main.ml.resume", 1, 3)
    one = bridge("mlflow.model.version_created", durable="resume", start="all", max_events=3, idle_timeout=60, **live)
    later = _versions("main.ml.resume", 4, 4)  # published while no bridge runs
    two = bridge("mlflow.model.version_created", durable="resume", idle_timeout=3, **live)

    assert list(one.ids) == first
    assert list(two.ids) == later  # after the restart: exactly the new ones, in order
    assert two.stopped_by == "idle_timeout"
    events = read_prefect_events({"databricks.workspace": live["workspace"]}, at_least=7)
    counts = collections.Counter(str(e.id) for e in events)
    assert sorted(counts) == sorted(first + later)
    assert set(counts.values()) == {1}


def test_event_not_accepted_by_prefect_is_not_acknowledged(live: dict[str, str], read_prefect_events: Any) -> None:
    """When handing an event to Prefect fails the bridge stops without acknowledging it, and the restart delivers it."""
    ids = _versions("main.ml.fail", 1, 3)

    def refuse_second(envelope: dict[str, Any]) -> str | None:
        if envelope["id"] == ids[1]:
            raise ConnectionError("Prefect unreachable (simulated)")
        return None

    with pytest.raises(ConnectionError, match="simulated"):
        bridge(durable="flaky", start="all", resource_id=refuse_second, idle_timeout=60, **live)
    again = bridge(durable="flaky", idle_timeout=3, **live)

    assert list(again.ids) == ids[1:]  # the refused event comes again, then the rest
    events = read_prefect_events({"databricks.workspace": live["workspace"]}, at_least=3)
    assert sorted(str(e.id) for e in events) == sorted(ids)


def test_bridge_stops_when_asked(live: dict[str, str]) -> None:
    """A bridge running in a thread stops, after acknowledging the event in hand, when its stop event is set."""
    stop = threading.Event()
    box: dict[str, Any] = {}

    def observe(envelope: dict[str, Any]) -> None:
        stop.set()  # asked to stop while this event is being handled

    _versions("main.ml.stop", 1, 2)
    worker = threading.Thread(
        target=lambda: box.update(result=bridge(start="all", resource_id=observe, stop=stop, idle_timeout=120, **live))
    )
    worker.start()
    worker.join(120)
    assert not worker.is_alive()
    assert box["result"].stopped_by == "stop"
    assert box["result"].count == 1
    rest = bridge(start="all", idle_timeout=3, **live)  # same durable: resumes after the acknowledged event
    assert rest.count == 1


def test_cli_process_bridges_until_sigterm(live: dict[str, str], prefect_api: str, read_prefect_events: Any) -> None:
    """The prefect-bridge subcommand runs as a long-lived process, bridges events, and exits cleanly on SIGTERM."""
    program = (
        "import argparse, sys\n"
        "from databricks_nats.integrations.prefect.cli import add_parser\n"
        "parser = argparse.ArgumentParser(prog='databricks-nats')\n"
        "add_parser(parser.add_subparsers(dest='command', required=True))\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.func(args))\n"
    )
    argv = ["prefect-bridge", "--url", live["url"], "--workspace", live["workspace"], "--env", live["env"]]
    argv += ["--type", "mlflow.model.alias_set", "--match", "alias=champion", "--start", "all", "--idle-timeout", "120"]
    ids = _publish("mlflow.model.alias_set", {"name": "m", "alias": "champion", "version": "1"})
    _publish("mlflow.model.alias_set", {"name": "m", "alias": "challenger", "version": "2"})
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    proc = subprocess.Popen(
        [sys.executable, "-c", program, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        events = read_prefect_events({"databricks.workspace": live["workspace"]}, at_least=1, timeout=90)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert [str(e.id) for e in events] == ids
    assert proc.returncode == 0, err.decode()
    assert "1 event(s) handled (stopped: SIGTERM)" in out.decode()
    assert "stopped by stop" not in out.decode() + err.decode()
    assert "bridged mlflow.model.alias_set" in err.decode()
