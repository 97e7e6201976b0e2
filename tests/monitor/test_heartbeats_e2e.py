"""The library's own heartbeats, end to end: a real publisher process beats, is SIGKILLed, and the monitor flags
it stale; a publisher closed cleanly is shown stopped."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from databricks_nats.testing import NatsServer
from tests.monitor.conftest import cli_env

_PUBLISHER = """
import sys, time
from databricks_nats.client import Client
client = Client(url={url!r}, workspace={workspace!r}, env={env!r}, spool_dir={spool!r}, health_interval=0.5)
client.emit("myteam.features.refreshed", {{"table": "users"}}, keys=["users"])
while client.stats()["acked"] < 2:  # the event and the first heartbeat
    time.sleep(0.05)
print(client._heartbeat.id, flush=True)
if sys.argv[1] == "close":
    client.close()
    print("closed", flush=True)
else:
    time.sleep(600)
"""


def _start(server: NatsServer, namespace: dict[str, str], tmp_path: Any, how: str) -> subprocess.Popen[str]:
    script = _PUBLISHER.format(url=server.url, spool=str(tmp_path / how), **namespace)
    return subprocess.Popen([sys.executable, "-c", script, how], stdout=subprocess.PIPE, text=True, env=cli_env())


def test_a_killed_publisher_is_flagged_stale_and_a_closed_one_stopped(
    nats_server: NatsServer,
    namespace: dict[str, str],
    tmp_path: Any,
    monitor_json: Callable[..., tuple[int, dict[str, Any]]],
) -> None:
    closed = _start(nats_server, namespace, tmp_path, "close")
    killed = _start(nats_server, namespace, tmp_path, "kill")
    try:
        assert closed.stdout is not None
        assert killed.stdout is not None
        closed_id = closed.stdout.readline().strip()
        assert closed.stdout.readline().strip() == "closed"
        killed_id = killed.stdout.readline().strip()
        code, doc = monitor_json("--stale-after", "3")
        rows = {p["publisher_id"]: p for p in doc["publishers"]}
        assert rows[killed_id]["state"] == "connected"
        assert not rows[killed_id]["stale"]
    finally:
        killed.kill()  # SIGKILL: no system.publisher.stopped
        killed.wait(30)
        closed.wait(30)
    assert rows[closed_id]["state"] == "stopped"
    assert rows[closed_id]["reason"] == "closed"
    deadline = time.monotonic() + 60  # guards a hang; the row turns stale 3 s after the last heartbeat
    while True:
        code, doc = monitor_json("--stale-after", "3")
        row = {p["publisher_id"]: p for p in doc["publishers"]}[killed_id]
        if row["stale"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert row["stale"]
    assert row["red"]
    assert code == 1
    assert not {p["publisher_id"]: p for p in doc["publishers"]}[closed_id]["red"]
