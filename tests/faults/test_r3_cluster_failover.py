"""R3: a 3-node NATS cluster on loopback, an R3 stream, and the node the publisher is connected to SIGKILLed.

Three real nats-server processes (cluster routes between them, JetStream on each with its own store and
``server_name``, free ports, config files written to the test's tmp directory). The publisher gets all three
URLs; which node it is on is read from the servers' own monitoring endpoint (``/connz``), never from the
library's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from databricks_nats import _api
from databricks_nats.testing import NatsServer, read_stream
from tests.faults.conftest import training_loop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CLUSTER_READY_S = 30.0


def _free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (held open together, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Node:
    name: str
    server: NatsServer
    http_port: int

    @property
    def url(self) -> str:
        return self.server.url

    def connz(self) -> list[dict[str, Any]]:
        """The client connections this node reports on its monitoring port."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/connz", timeout=2) as resp:
            return json.load(resp).get("connections") or []


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            value = condition()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Node]]:
    """Three JetStream nodes n1..n3 routed to each other on loopback; all stopped and removed afterwards."""
    client, route, http = _free_ports(3), _free_ports(3), _free_ports(3)
    nodes: list[Node] = []
    try:
        for i in range(3):
            routes = ", ".join(f"nats-route://127.0.0.1:{route[j]}" for j in range(3) if j != i)
            store = tmp_path / f"n{i + 1}-js"
            config = tmp_path / f"n{i + 1}.conf"
            config.write_text(
                f"server_name: n{i + 1}\n"
                f"listen: 127.0.0.1:{client[i]}\n"
                f"http: 127.0.0.1:{http[i]}\n"
                f"cluster {{\n  name: r3test\n  listen: 127.0.0.1:{route[i]}\n  routes: [{routes}]\n}}\n"
            )
            # NatsServer adds ``-js -sd <store>`` on the command line (a store_dir in the file would clash)
            server = NatsServer(config=str(config), port=client[i], store_dir=str(store))
            nodes.append(Node(f"n{i + 1}", server, http[i]))
            server.start()
        _wait(lambda: all(_jetstream_ready(n.url) for n in nodes), CLUSTER_READY_S, "a JetStream meta leader")
        yield nodes
    finally:
        for n in nodes:
            n.server.close()


def _jetstream_ready(url: str) -> bool:
    """True when this node answers JetStream account requests (the cluster has elected a meta leader)."""

    async def probe() -> bool:
        import nats

        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        try:
            await nc.jetstream(timeout=2).account_info()
            return True
        finally:
            await nc.close()

    return asyncio.run(probe())


def _stream_current(url: str, stream: str) -> bool:
    """True when the stream has a leader and both followers are current."""

    async def probe() -> bool:
        import nats

        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        try:
            info = await nc.jetstream(timeout=2).stream_info(stream)
            c = info.cluster
            return bool(c and c.leader and c.replicas and len(c.replicas) == 2 and all(r.current for r in c.replicas))
        finally:
            await nc.close()

    return asyncio.run(probe())


def _stream_leader(url: str, stream: str) -> str | None:
    async def probe() -> str | None:
        import nats

        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        try:
            info = await nc.jetstream(timeout=2).stream_info(stream)
            return info.cluster.leader if info.cluster else None
        finally:
            await nc.close()

    return asyncio.run(probe())


def _move_leader(url: str, stream: str, to: str) -> None:
    """Ask the stream's leader to step down in favour of node ``to`` (JetStream API, preferred placement)."""

    async def request() -> None:
        import nats

        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        try:
            body = json.dumps({"placement": {"preferred": to}}).encode()
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=5)
        finally:
            await nc.close()

    asyncio.run(request())


def test_killing_the_connected_node_of_a_three_node_cluster_loses_nothing_and_fails_over(
    cluster: list[Node], make_settings: Any
) -> None:
    """SIGKILL of the node the publisher is connected to: it fails over and every event is in the R3 stream once."""
    urls = ",".join(n.url for n in cluster)
    settings = make_settings(urls, stream_replicas=3, ack_timeout=1.0, client_name="r3-publisher")
    _api.ensure_stream(url=urls, workspace=settings.workspace, env=settings.env, stream_replicas=3)
    _wait(lambda: _stream_current(cluster[0].url, settings.stream_name), CLUSTER_READY_S, "R3 stream replicas")

    pub = _api.build_transport(settings)

    def connected_node() -> Node | None:
        for n in cluster:
            if n.server.proc is not None and any(c.get("name") == "r3-publisher" for c in n.connz()):
                return n
        return None

    with training_loop(pub, "r3") as ids:
        _wait(lambda: pub.stats()["acked"] >= 300, 30, "the first acks")
        victim = _wait(connected_node, 10, "the publisher's connection in /connz")
        # the hardest case: the node the publisher is on also leads the stream
        if _stream_leader(victim.url, settings.stream_name) != victim.name:
            _move_leader(victim.url, settings.stream_name, victim.name)
            _wait(lambda: _stream_leader(victim.url, settings.stream_name) == victim.name, 20, "the leader move")
        _wait(lambda: _stream_current(victim.url, settings.stream_name), 20, "replicas current before the kill")
        acked_at_kill, emitted_at_kill = pub.stats()["acked"], len(ids)
        victim.server.kill()
        survivor = _wait(connected_node, 30, "the publisher to reconnect to a surviving node")
        _wait(lambda: pub.stats()["acked"] > acked_at_kill + 300, 30, "acks after the failover")
    new_leader = _stream_leader(survivor.url, settings.stream_name)
    result = pub.flush(60)
    final = pub.stats()
    pub.close()
    assert result.ok, final

    assert survivor is not victim
    assert new_leader not in (None, victim.name), "the stream got no new leader"
    print(f"killed {victim.name} (stream leader); now on {survivor.name}, leader {new_leader}; {final}")
    assert len(ids) > emitted_at_kill, "no event was emitted after the kill"
    stored = [m["envelope"]["id"] for m in read_stream(survivor.url, settings.stream_name)]
    duplicates = [i for i, n in Counter(stored).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} event(s) stored more than once"
    missing = set(ids) - set(stored)
    assert not missing, f"{len(missing)} of {len(ids)} event(s) lost"
    assert len(stored) == len(ids)
    assert final["dropped_total"] == 0
    assert final["connection"] == "connected"
