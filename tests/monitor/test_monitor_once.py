"""`databricks-nats monitor --json --once` as a subprocess against a real JetStream server: rates, latency,
consumer lag, publisher health from heartbeats (stale after a SIGKILL), thresholds, the alert event."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import CLI, cli_env, health

import databricks_nats
from databricks_nats.consumer import subscribe
from databricks_nats.testing import NatsServer

Monitor = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def published(nats_server: NatsServer, namespace: dict[str, str], tmp_path: Any) -> dict[str, str]:
    """30 alias_set and 5 registered events, stored; returns the settings a reader needs."""
    databricks_nats.configure(url=nats_server.url, spool_dir=str(tmp_path / "spool"), **namespace)
    for v in range(30):
        databricks_nats.emit("mlflow.model.alias_set", {"name": "churn", "alias": "champion", "version": str(v)})
    for n in range(5):
        databricks_nats.emit("mlflow.model.registered", {"name": f"model{n}"})
    assert databricks_nats.flush(timeout=30).ok
    return {"url": nats_server.url, **namespace}


def test_once_json_reports_rates_latency_and_a_lagging_consumer(
    published: dict[str, str], monitor_json: Monitor
) -> None:
    """Rates per source/type over the window, publish-to-stream latency, and a durable consumer that read one
    event and acknowledged none: every stored event still counts as its lag."""
    with subscribe("mlflow.model.*", durable="slow-airflow", start="all", **published) as sub:
        sub.next(timeout=30)  # delivered, never acknowledged
        code, doc = monitor_json("--window", "600")
    assert code == 0  # no thresholds: nothing is red
    assert doc["stream"]
    assert doc["namespace"].endswith(f"{published['workspace']}.{published['env']}")
    rates = {r["type"]: r for r in doc["rates"]}
    assert rates["mlflow.model.alias_set"]["events"] == 30
    assert rates["mlflow.model.registered"]["events"] == 5
    assert rates["mlflow.model.alias_set"]["per_s"] == pytest.approx(30 / 600, abs=0.01)
    assert rates["mlflow.model.alias_set"]["source"].endswith("/mlflow")
    assert doc["events"] == sum(r["events"] for r in doc["rates"]) >= 35  # with the publishers' own heartbeats
    for row in (doc, rates["mlflow.model.alias_set"]):
        assert row["p50_ms"] is not None
        assert row["p99_ms"] is not None
        assert 0 <= row["p50_ms"] <= row["p99_ms"]
    (consumer,) = doc["consumers"]  # durable ones only: not the monitor's own reader
    assert consumer["name"] == "slow-airflow"
    assert consumer["pending"] + consumer["ack_pending"] == consumer["lag"] == 35
    assert consumer["ack_pending"] >= 1
    assert consumer["redelivered"] == 0
    assert not consumer["red"]


def test_thresholds_turn_rows_red_and_the_exit_code_1(published: dict[str, str], monitor_json: Monitor) -> None:
    """--max-lag and --max-p99-ms: the rows over them are red with the reason, and --once exits 1 (for CI)."""
    with subscribe("mlflow.model.*", durable="behind", start="all", **published) as sub:
        sub.next(timeout=30)
        ok_code, ok = monitor_json("--max-lag", "1000", "--max-p99-ms", "600000")
        code, doc = monitor_json("--max-lag", "10")
        slow_code, slow = monitor_json("--max-p99-ms", "0")
    assert (ok_code, ok["red"]) == (0, False)
    assert (code, doc["red"]) == (1, True)
    (consumer,) = doc["consumers"]
    assert consumer["red"]
    assert consumer["why"] == ["lag 35 > 10"]
    assert slow_code == 1
    assert slow["why"]
    assert slow["why"][0].startswith("p99 ")
    assert all(r["red"] for r in slow["rates"])
    assert slow["alerts"] == 0  # no --alert: nothing published


def test_alert_publishes_latency_degraded_once(
    published: dict[str, str], monitor_json: Monitor, assert_valid_event: Callable[[dict[str, Any]], None]
) -> None:
    """--alert publishes system.latency.degraded with the window's figures when p99 crosses --max-p99-ms."""
    code, doc = monitor_json("--max-p99-ms", "0", "--alert", "--window", "300")
    assert code == 1
    assert doc["alerts"] == 1
    with subscribe("system.latency.degraded", start="all", **published) as sub:
        alert = sub.next(timeout=30)
        with pytest.raises(TimeoutError):
            sub.next(timeout=1)  # exactly one
    assert_valid_event(alert.envelope)
    assert alert.data["bound_ms"] == 0
    assert alert.data["p99_ms"] == doc["p99_ms"] > 0
    assert alert.data["events"] == doc["events"] >= 35
    assert alert.data["window_s"] == 300
    assert {w["type"] for w in alert.data["worst"]} <= {"mlflow.model.alias_set", "mlflow.model.registered"}
    assert alert.data["worst"][0]["p99_ms"] == max(r["p99_ms"] for r in doc["rates"])


_BEATING = """
import sys, time
from databricks_nats.client import Client
sys.path.insert(0, {tests!r})
from conftest import health
client = Client(url={url!r}, workspace={workspace!r}, env={env!r}, spool_dir={spool!r})
client.emit("system.publisher.health", health("beating-1", interval_s=1.0))
assert client.flush(timeout=30).ok
print("ready", flush=True)
while True:
    time.sleep(0.2)
    client.emit("system.publisher.health", health("beating-1", interval_s=1.0, queue_depth=3))
"""


def test_a_killed_publisher_turns_stale_and_a_stopped_one_is_shown_stopped(
    nats_server: NatsServer, namespace: dict[str, str], tmp_path: Any, monitor_json: Monitor
) -> None:
    """Heartbeats every 0.2 s (interval_s 1): healthy while they arrive; after SIGKILL the publisher is flagged
    stale (3 x its interval) and red; one that said system.publisher.stopped is shown stopped, not red."""
    with databricks_nats.Client(url=nats_server.url, spool_dir=str(tmp_path / "spool"), **namespace) as clean:
        clean.emit("system.publisher.health", health("clean-1"))
        clean.emit("system.publisher.stopped", {**health("clean-1"), "reason": "exit", "state": "closed"})
    tests = str(__import__("pathlib").Path(__file__).parent)
    script = _BEATING.format(tests=tests, url=nats_server.url, spool=str(tmp_path / "spool2"), **namespace)
    beating = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=cli_env())
    try:
        assert beating.stdout is not None
        assert beating.stdout.readline().strip() == "ready"
        code, doc = monitor_json()
        rows = {p["publisher_id"]: p for p in doc["publishers"]}
        assert rows["beating-1"]["state"] == "connected"
        assert not rows["beating-1"]["stale"]
        assert rows["beating-1"]["interval_s"] == 1.0
        assert rows["beating-1"]["acked"] == 7
    finally:
        beating.kill()  # SIGKILL: no system.publisher.stopped
        beating.wait(30)
    assert code == 0, doc
    assert rows["clean-1"]["state"] == "stopped"
    assert rows["clean-1"]["reason"] == "exit"
    deadline = time.monotonic() + 60  # guards a hang; the row turns stale 3 s after the last heartbeat
    while True:
        code, doc = monitor_json()
        row = {p["publisher_id"]: p for p in doc["publishers"]}["beating-1"]
        if row["stale"] or time.monotonic() > deadline:
            break
    assert row["stale"]
    assert row["red"]
    assert row["why"][0].startswith("silent ")
    assert row["queue_depth"] == 3  # what its last heartbeat said
    assert code == 1
    assert doc["red"]
    clean_row = {p["publisher_id"]: p for p in doc["publishers"]}["clean-1"]
    assert clean_row["state"] == "stopped"
    assert not clean_row["red"]


def test_usage_errors_and_an_unreachable_server(monitor: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """--alert without a bound is a usage error; an unreachable server is one line on stderr and exit 1."""
    bad = monitor("--once", "--json", "--alert")
    assert bad.returncode == 2
    assert "--max-p99-ms" in bad.stderr
    down = subprocess.run(
        [*CLI, "monitor", "--url", "nats://127.0.0.1:1", "--once", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert down.returncode == 1
    assert down.stderr.count("\n") == 1
    assert "cannot monitor" in down.stderr
    assert down.stdout == ""


def test_without_rich_the_view_says_how_to_install_it(nats_server: NatsServer) -> None:
    """The live view needs the `monitor` extra; without rich the command names the install line (exit 2)."""
    code = (
        "import sys; sys.modules['rich'] = None; from databricks_nats.cli import main; "
        f"sys.exit(main(['monitor', '--url', {nats_server.url!r}, '--once']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=cli_env())
    assert done.returncode == 2
    assert "pip install 'databricks-nats[monitor]'" in done.stderr
    assert "pip install '.[monitor]'" in done.stderr
