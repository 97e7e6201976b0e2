"""OpenTelemetry metrics of a publisher: the real SDK (an in-memory reader) and a real Prometheus scrape.

One MeterProvider is the process's global one for this module (OpenTelemetry allows setting it once); every
test has its own namespace and reads only the measurements carrying it.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from databricks_nats import Client
from tests.processes import free_port

pytest.importorskip("opentelemetry.sdk", reason="pip install opentelemetry-sdk (part of the dev extra)")

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

_reader = InMemoryMetricReader()
_provider = MeterProvider(metric_readers=[_reader])


@pytest.fixture(scope="module", autouse=True)
def _global_provider() -> None:
    metrics.set_meter_provider(_provider)
    assert metrics.get_meter_provider() is _provider, "another test set the global MeterProvider first"


def _points(namespace: str) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Collect now: instrument name -> [(attributes, point)] of this namespace."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = _reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attrs = dict(point.attributes or {})
                    if attrs.get("namespace") == namespace:
                        found.setdefault(metric.name, []).append((attrs, point))
    return found


def _value(points: dict[str, list[tuple[dict[str, Any], Any]]], name: str, **match: str) -> float:
    return sum(p.value for a, p in points.get(name, []) if all(a.get(k) == v for k, v in match.items()))


def _wait_connected(client: Client) -> None:
    deadline = time.monotonic() + 20
    while client.stats()["connection"] != "connected" and time.monotonic() < deadline:
        time.sleep(0.05)


def test_metrics_match_stats_after_a_run_with_an_outage(fresh_server, namespace, tmp_path):
    """NATS stops mid-run and returns: every counter, the latency histogram and the gauges agree with stats()."""
    client = Client(url=fresh_server.url, spool_dir=str(tmp_path / "spool"), ack_timeout=1.0, **namespace)
    for i in range(40):
        client.emit("myteam.features.refreshed", {"i": i}, keys=["users"])
    _wait_connected(client)
    assert client.flush(30).ok
    fresh_server.stop()
    for i in range(25):
        client.emit("otherteam.model.scored", {"i": i}, keys=["m"])
    time.sleep(1.0)  # the write-behind spools what cannot be sent
    down = _points(client.settings.namespace)
    fresh_server.start()
    assert client.flush(60).ok, client.stats()
    stats = client.stats()
    points = _points(client.settings.namespace)
    client.close()

    assert _value(down, "databricks_nats.connection.state", state="connected") == 0
    assert _value(down, "databricks_nats.queue.depth") + _value(down, "databricks_nats.spool.size") > 0
    assert _value(down, "databricks_nats.unacked.oldest_age") >= 1.0  # emitted before the 1 s wait, not yet acked
    assert _value(points, "databricks_nats.events.emitted", source="myteam") == 40
    assert _value(points, "databricks_nats.events.emitted", source="otherteam") == 25
    assert _value(points, "databricks_nats.events.emitted") == stats["emitted"] == 65
    assert _value(points, "databricks_nats.events.acked") == stats["acked"] == 65
    assert _value(points, "databricks_nats.events.acked", source="otherteam") == 25
    assert _value(points, "databricks_nats.events.spooled") == stats["spooled"] > 0
    assert _value(points, "databricks_nats.events.retried") == stats["retried"]
    assert _value(points, "databricks_nats.events.duplicates") == stats["duplicates"]
    assert _value(points, "databricks_nats.events.dropped") == stats["dropped_total"] == 0
    assert _value(points, "databricks_nats.connection.connects") == stats["connects"] == 1
    assert _value(points, "databricks_nats.connection.reconnects") == stats["reconnects"] >= 1
    assert _value(points, "databricks_nats.connection.state", state="connected") == 1
    assert _value(points, "databricks_nats.queue.depth") == 0
    assert stats["oldest_unacked_age_s"] is None  # everything acked
    assert "databricks_nats.unacked.oldest_age" not in points
    attrs = points["databricks_nats.ack.latency"][0][0]
    latencies = [p for _, p in points["databricks_nats.ack.latency"]]
    assert sum(p.count for p in latencies) == stats["acked"]  # one latency per acknowledged event
    assert attrs["workspace"] == namespace["workspace"]
    assert attrs["env"] == namespace["env"]


def test_a_closed_publisher_is_read_no_more(nats_server, namespace, tmp_path):
    client = Client(url=nats_server.url, spool_dir=str(tmp_path / "spool"), **namespace)
    client.emit("myteam.features.refreshed", {"i": 1}, keys=["users"])
    assert client.flush(20).ok
    assert _value(_points(client.settings.namespace), "databricks_nats.events.acked") == 1
    client.close()
    # the histogram is the SDK's (cumulative, kept); the counters and gauges were read from the publisher
    assert set(_points(client.settings.namespace)) == {"databricks_nats.ack.latency"}


def test_otel_metrics_off_counts_nothing_per_source(nats_server, namespace, tmp_path):
    client = Client(url=nats_server.url, spool_dir=str(tmp_path / "spool"), otel_metrics=False, **namespace)
    client.emit("myteam.features.refreshed", {"i": 1}, keys=["users"])
    assert client.flush(20).ok
    assert _points(client.settings.namespace) == {}
    client.close()


def test_the_prometheus_endpoint_serves_the_counters(nats_server, namespace, tmp_path):
    """``prometheus_port``: a real HTTP scrape shows the acked events per source, with workspace and env."""
    port = free_port()
    client = Client(url=nats_server.url, spool_dir=str(tmp_path / "spool"), prometheus_port=port, **namespace)
    for i in range(7):
        client.emit("myteam.features.refreshed", {"i": i}, keys=["users"])
    assert client.flush(20).ok
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    client.close()
    lines = [line for line in text.splitlines() if line.startswith("databricks_nats_events_acked")]
    mine = [line for line in lines if f'workspace="{namespace["workspace"]}"' in line and 'source="myteam"' in line]
    assert mine, lines
    assert mine[0].rstrip().endswith(" 7.0"), lines
    assert "databricks_nats_ack_latency_seconds_bucket" in text


def test_without_opentelemetry_installed_publishing_works(nats_server, namespace, tmp_path):
    """``opentelemetry`` cannot be imported: nothing is measured, nothing fails, every event is acked."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from databricks_nats import Client\n"
        f"c = Client(url={nats_server.url!r}, spool_dir={str(tmp_path / 'spool')!r}, "
        f"workspace={namespace['workspace']!r}, env={namespace['env']!r})\n"
        "for i in range(5): c.emit('myteam.features.refreshed', {'i': i}, keys=['users'])\n"
        "assert c.flush(20).ok\n"
        "print(c.stats()['acked'])\n"
        "c.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"


def test_latencies_are_kept_only_once_something_collects(nats_server, namespace, tmp_path):
    """With the API's default provider (no collector) no latency is kept; a provider set later gets the
    latencies from its first collection on."""
    code = (
        "from databricks_nats import Client\n"
        f"c = Client(url={nats_server.url!r}, spool_dir={str(tmp_path / 'spool')!r}, "
        f"workspace={namespace['workspace']!r}, env={namespace['env']!r})\n"
        "for i in range(5): c.emit('myteam.features.refreshed', {'i': i}, keys=['users'])\n"
        "assert c.flush(20).ok\n"
        "before = c.transport.stats_.latency_tap\n"
        "from opentelemetry import metrics\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from opentelemetry.sdk.metrics.export import InMemoryMetricReader\n"
        "reader = InMemoryMetricReader(); metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))\n"
        "reader.get_metrics_data()\n"
        "for i in range(3): c.emit('myteam.features.refreshed', {'i': i}, keys=['users'])\n"
        "assert c.flush(20).ok\n"
        "data = reader.get_metrics_data()\n"
        "counts = [p.count for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics\n"
        "          if m.name == 'databricks_nats.ack.latency' for p in m.data.data_points]\n"
        "print(before, sum(counts))\n"
        "c.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "3"]
