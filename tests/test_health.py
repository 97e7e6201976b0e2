"""Health heartbeats observed by a real subscriber: a live publisher beats, a closed one says it stopped."""

from __future__ import annotations

import time

from databricks_nats import Client
from databricks_nats.testing import read_stream


def _events(server, client: Client, kind: str) -> list[dict]:
    return [
        m["envelope"] for m in read_stream(server.url, client.settings.stream_name) if m["envelope"]["type"] == kind
    ]


def test_a_publisher_beats_at_its_interval_and_says_when_it_stopped(
    nats_server, namespace, tmp_path, assert_valid_event
):
    client = Client(url=nats_server.url, spool_dir=str(tmp_path / "spool"), health_interval=0.3, **namespace)
    client.emit("myteam.features.refreshed", {"table": "users"}, keys=["users"])
    deadline = time.monotonic() + 30
    while client.stats()["emitted"] < 3 and time.monotonic() < deadline:  # the event and two heartbeats
        time.sleep(0.05)
    assert client.flush(20).ok
    client.close()

    beats = _events(nats_server, client, "databricks.system.publisher.health")
    stopped = _events(nats_server, client, "databricks.system.publisher.stopped")
    assert len(beats) >= 2
    assert len(stopped) == 1
    for envelope in [*beats, *stopped]:
        assert_valid_event(envelope)
    first = beats[0]["data"]
    assert first["interval_s"] == 0.3
    assert first["state"] == "connected"
    assert first["stats"]["emitted"] >= 1
    assert first["versions"]["databricks-nats"]
    assert first["compute"]["kind"] == "local"
    assert {b["data"]["publisher_id"] for b in beats} == {stopped[0]["data"]["publisher_id"]}
    assert beats[0]["subject"].endswith(f"system.publisher.{first['publisher_id']}.health")
    assert stopped[0]["data"]["reason"] == "closed"
    assert stopped[0]["data"]["stats"]["acked"] >= 2


def test_no_heartbeats_when_the_interval_is_zero(nats_server, namespace, tmp_path):
    client = Client(url=nats_server.url, spool_dir=str(tmp_path / "spool"), health_interval=0, **namespace)
    client.emit("myteam.features.refreshed", {"table": "users"}, keys=["users"])
    assert client.flush(20).ok
    client.close()
    types = [m["envelope"]["type"] for m in read_stream(nats_server.url, client.settings.stream_name)]
    assert types == ["databricks.myteam.features.refreshed"]
