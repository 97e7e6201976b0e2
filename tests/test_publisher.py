"""The publisher against a real nats-server: delivery, acks, dedupe, flush, threads, loops, spool limits."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import threading
from typing import Any

import pytest

import databricks_nats
from databricks_nats import _api
from databricks_nats.model.events import new_event
from databricks_nats.testing import read_stream
from databricks_nats.testing import read_stream as stream_messages
from databricks_nats.transport.publisher import Publisher


def _metric(i: int) -> dict[str, Any]:
    return {"experiment_id": "7", "run_id": "r1", "metrics": {"loss": 1.0 / (i + 1)}, "points": 1, "final": False}


def test_jetstream_delivers_every_event_once_with_cloudevents_headers(nats_server, make_settings):
    """Events emitted in JetStream mode are all stored once, in order, with CloudEvents headers and Nats-Msg-Id."""
    settings = make_settings(nats_server)
    pub = _api.build_transport(settings)
    events = [new_event("mlflow.run.metrics", _metric(i)) for i in range(200)]
    for ev in events:
        pub.emit(ev)
    assert pub.flush(20).ok
    stats = pub.stats()
    pub.close()
    msgs = stream_messages(nats_server.url, settings.stream_name)
    assert [m["envelope"]["id"] for m in msgs] == [e.id for e in events]
    first = msgs[0]
    assert first["headers"]["Content-Type"] == "application/cloudevents+json"
    assert first["headers"]["Nats-Msg-Id"] == events[0].id
    assert first["subject"] == f"{settings.namespace}.mlflow.run.7.r1.metrics"
    assert first["envelope"]["specversion"] == "1.0"
    assert stats["acked"] == 200
    assert stats["pending"] == 0
    assert stats["duplicates"] == 0
    assert stats["ack_latency_ms"]["p50"] is not None


def test_emit_many_delivers_a_batch_in_order_and_counts_it_like_emit(nats_server, make_settings):
    """A batch handed over at once (one worker wake) is stored once, in order; beyond the inbox cap the rest
    of the batch is counted ``dropped.queue_full`` event by event, as ``emit`` counts it."""
    settings = make_settings(nats_server)
    pub = _api.build_transport(settings)
    assert isinstance(pub, Publisher)
    events = [new_event("mlflow.run.metrics", _metric(i)) for i in range(500)]
    pub.emit_many(iter(events))  # any iterable
    assert pub.flush(20).ok
    stats = pub.stats()
    pub.close()
    stored = [m["envelope"]["id"] for m in stream_messages(nats_server.url, settings.stream_name)]
    assert stored == [e.id for e in events]
    assert (stats["emitted"], stats["acked"], stats["dropped_total"]) == (500, 500, 0)

    capped = _api.build_transport(make_settings("nats://127.0.0.1:1", queue_max_events=10, connect_timeout=0.2))
    assert isinstance(capped, Publisher)
    held, release = threading.Event(), threading.Event()
    capped._loop.call_soon_threadsafe(lambda: (held.set(), release.wait(30)))  # the worker takes nothing meanwhile
    try:
        assert held.wait(30)
        capped.emit_many([new_event("mlflow.run.metrics", _metric(i)) for i in range(25)])
        stats = capped.stats()
    finally:
        release.set()
        capped.close(0)
    assert (stats["emitted"], stats["queue_depth"], stats["dropped"].get("queue_full")) == (25, 10, 15)


def test_resending_an_event_id_is_stored_once_and_counted_as_duplicate(nats_server, make_settings):
    """An event re-sent with the same id (a retry, a replay) is dropped by JetStream and counted as a duplicate."""
    settings = make_settings(nats_server)
    pub = _api.build_transport(settings)
    ev = new_event("mlflow.run.metrics", _metric(0))
    pub.emit(ev)
    assert pub.flush(10).ok
    pub.emit(ev)  # the very same event object: same id
    assert pub.flush(10).ok
    stats = pub.stats()
    pub.close()
    assert stats["duplicates"] == 1
    assert len(stream_messages(nats_server.url, settings.stream_name)) == 1


def test_core_mode_delivers_to_a_plain_subscriber(nats_server, make_settings):
    """Core mode publishes fire-and-forget; flush returns once the server has everything."""
    import nats

    settings = make_settings(nats_server, mode="core")
    got: list[bytes] = []
    ready = threading.Event()
    done = threading.Event()

    async def subscriber() -> None:
        nc = await nats.connect(nats_server.url)

        async def on_msg(m: Any) -> None:
            got.append(m.data)

        await nc.subscribe(f"{settings.namespace}.>", cb=on_msg)
        await nc.flush()
        ready.set()
        while not (done.is_set() and len(got) >= 300):
            await asyncio.sleep(0.02)
        await nc.close()

    th = threading.Thread(target=lambda: asyncio.run(asyncio.wait_for(subscriber(), 30)))
    th.start()
    assert ready.wait(10)
    pub = _api.build_transport(settings)
    ids = []
    for i in range(300):
        ev = new_event("mlflow.run.metrics", _metric(i))
        ids.append(ev.id)
        pub.emit(ev)
    assert pub.flush(10).ok
    done.set()
    th.join(30)
    assert pub.stats()["acked"] == 300
    pub.close()
    assert [json.loads(d)["id"] for d in got] == ids


def test_flush_waits_for_acks_and_reports_pending_when_server_is_down(tmp_path, make_settings):
    """flush() is ok only once everything is acked; with no server it times out and reports the pending count."""
    settings = make_settings("nats://127.0.0.1:1", connect_timeout=0.2)
    pub = _api.build_transport(settings)
    for i in range(5):
        pub.emit(new_event("mlflow.run.metrics", _metric(i)))
    result = pub.flush(0.5)
    assert not result.ok
    assert result.pending == 5
    stats = pub.stats()
    assert stats["connection"] in ("connecting", "disconnected")
    assert stats["acked"] == 0
    assert "ConnectionRefused" in (stats["last_error"] or "")
    assert stats["spooled"] == 5
    pub.close(0)


def test_emit_never_raises_and_strict_mode_raises(make_settings):
    """A bad event type is logged, counted and swallowed by default, and raised when strict is set."""
    databricks_nats.configure(
        url="nats://127.0.0.1:1", spool_dir=make_settings("nats://x:1").spool_dir, connect_timeout=0.2
    )
    assert databricks_nats.emit("not-a-type", {}) is None
    assert databricks_nats.emit("a.b.c", "not a mapping") is None  # type: ignore[arg-type]
    assert databricks_nats.stats()["dropped"]["invalid"] == 2
    databricks_nats.configure(url="nats://127.0.0.1:1", spool_dir=make_settings("nats://x:1").spool_dir, strict=True)
    with pytest.raises(databricks_nats.DatabricksNatsError):
        databricks_nats.emit("not-a-type", {})
    databricks_nats.emit("a.b.c", {"x": 1}, keys=["k"])
    with pytest.raises(databricks_nats.FlushTimeout):
        databricks_nats.flush(0.2)


def test_many_threads_emitting_at_once_lose_nothing(nats_server, make_settings):
    """Sixteen threads emitting concurrently deliver every event exactly once."""
    settings = make_settings(nats_server)
    pub = _api.build_transport(settings)
    ids: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        mine = []
        for i in range(250):
            ev = new_event("mlflow.run.metrics", {**_metric(i), "run_id": f"t{n}"})
            mine.append(ev.id)
            pub.emit(ev)
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pub.flush(30).ok
    pub.close()
    stored = [m["envelope"]["id"] for m in stream_messages(nats_server.url, settings.stream_name)]
    assert sorted(stored) == sorted(ids)
    assert len(stored) == 4000


def test_emit_and_flush_work_inside_a_running_event_loop(nats_server, make_settings):
    """Calling the API from a coroutine (as notebooks do) neither blocks the caller's loop nor fails."""
    settings = make_settings(nats_server)
    databricks_nats.configure(**{k: getattr(settings, k) for k in ("url", "spool_dir", "workspace", "env")})

    async def notebook_cell() -> bool:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        for i in range(50):
            databricks_nats.emit("mlflow.run.metrics", _metric(i))
            await asyncio.sleep(0)
        ok = databricks_nats.flush(10).ok
        report = databricks_nats.ensure_stream()
        t.cancel()
        assert report.action == "unchanged"
        return ok and ticks > 0

    assert asyncio.run(notebook_cell())
    assert len(stream_messages(nats_server.url, settings.stream_name)) == 50


def test_unwritable_spool_dir_falls_back_to_memory_with_one_warning(nats_server, make_settings, tmp_path, caplog):
    """An unwritable spool directory gives a memory spool, one warning, and still delivers."""
    if os.geteuid() == 0:
        target = "/proc/databricks-nats-cannot-write-here"  # even root cannot create directories in /proc
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        target = str(locked / "spool")
    settings = make_settings(nats_server, spool_dir=target)
    with caplog.at_level(logging.WARNING, logger="databricks_nats"):
        pub = _api.build_transport(settings)
    warnings = [r for r in caplog.records if "not usable" in r.getMessage()]
    assert len(warnings) == 1
    pub.emit(new_event("mlflow.run.metrics", _metric(0)))
    assert pub.flush(10).ok
    stats = pub.stats()
    pub.close()
    assert stats["spool_durable"] is False
    assert stats["acked"] == 1


def test_disabled_setting_gives_a_noop_publisher(monkeypatch, tmp_path):
    """DATABRICKS_NATS_DISABLED=true makes every call a cheap no-op that never touches the network."""
    monkeypatch.setenv("DATABRICKS_NATS_DISABLED", "true")
    monkeypatch.setenv("DATABRICKS_NATS_SPOOL_DIR", str(tmp_path))
    assert databricks_nats.emit("a.b.c", {"x": 1}, keys=["k"]) is not None
    assert databricks_nats.flush(1).ok
    s = databricks_nats.stats()
    assert s["disabled"] is True
    assert s["emitted"] == 1
    assert not os.listdir(tmp_path)


def test_spool_bound_drops_oldest_and_counts_them(make_settings):
    """When the spool's disk bound is reached the oldest events are dropped and counted, never blocking."""
    settings = make_settings("nats://127.0.0.1:1", spool_max_bytes=20_000, connect_timeout=0.2)
    pub = _api.build_transport(settings)
    assert isinstance(pub, Publisher)
    for i in range(200):
        pub.emit(new_event("mlflow.run.metrics", _metric(i)))
    pub.flush(0.5)
    stats = pub.stats()
    pub.close(0)
    assert stats["dropped"]["spool_full"] > 0
    assert stats["spool_bytes"] <= 20_000
    assert stats["pending"] + stats["dropped"]["spool_full"] == 200


def test_memory_bound_spills_to_disk_and_still_delivers_in_order(nats_server, make_settings):
    """With only 50 events allowed in memory, 2,000 events go through the disk spool and arrive in order."""
    settings = make_settings(nats_server, memory_max_events=50, max_inflight=20)
    pub = _api.build_transport(settings)
    events = [new_event("mlflow.run.metrics", _metric(i)) for i in range(2000)]
    for ev in events:
        pub.emit(ev)
        assert pub.stats()["in_memory"] <= 50
    assert pub.flush(30).ok
    pub.close()
    stored = [m["envelope"]["id"] for m in stream_messages(nats_server.url, settings.stream_name)]
    assert stored == [e.id for e in events]


def test_initial_connection_failure_is_retried_until_the_server_appears(make_settings, tmp_path):
    """Events emitted before NATS exists are spooled and delivered once a server starts on that address."""
    import socket

    from databricks_nats.testing import NatsServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(f"nats://127.0.0.1:{port}")
    pub = _api.build_transport(settings)
    events = [new_event("mlflow.run.metrics", _metric(i)) for i in range(20)]
    for ev in events:
        pub.emit(ev)
    assert not pub.flush(1.0).ok
    with NatsServer(port=port) as srv:
        assert pub.flush(30).ok
        pub.close()
        assert [m["envelope"]["id"] for m in stream_messages(srv.url, settings.stream_name)] == [e.id for e in events]


def test_event_size_cap_is_clamped_below_the_servers_max_payload(make_settings, tmp_path):
    """A server with a 4 KiB max_payload still receives every event, trimmed to fit, never rejected."""
    from databricks_nats.testing import NatsServer

    conf = tmp_path / "small.conf"
    conf.write_text("max_payload: 4096\n")
    with NatsServer(config=str(conf)) as srv:
        settings = make_settings(srv, max_event_bytes=65536)
        pub = _api.build_transport(settings)
        pub.emit(
            new_event(
                "mlflow.run.params",
                {"experiment_id": "1", "run_id": "r", "params": {f"p{i}": "x" * 100 for i in range(500)}},
            )
        )
        assert pub.flush(10).ok
        pub.close()
        [msg] = read_stream(srv.url, settings.stream_name)
    data = msg["envelope"]["data"]
    assert data["truncated"] is True
    assert data["run_id"] == "r"
    assert len(json.dumps(msg["envelope"]).encode()) < 4096


def _subscribe_in_thread(url: str, subject: str, expect: int) -> tuple[list[bytes], threading.Event, Any]:
    """A core subscriber on its own thread; returns (payloads, ready, stop) where stop() joins it."""
    import nats

    got: list[bytes] = []
    ready, done = threading.Event(), threading.Event()

    async def run() -> None:
        nc = await nats.connect(url)

        async def on_msg(m: Any) -> None:
            got.append(m.data)

        await nc.subscribe(subject, cb=on_msg)
        await nc.flush()
        ready.set()
        while not (done.is_set() and len(got) >= expect):
            await asyncio.sleep(0.02)
        await nc.close()

    th = threading.Thread(target=lambda: asyncio.run(asyncio.wait_for(run(), 60)))
    th.start()
    assert ready.wait(10)

    def stop() -> None:
        done.set()
        th.join(60)

    return got, ready, stop


def test_core_mode_while_connected_keeps_a_burst_in_memory_and_off_the_disk(nats_server, make_settings):
    """Core mode is fire-and-forget: a burst 40x the memory bound is delivered in order without touching the spool."""
    settings = make_settings(nats_server, mode="core", memory_max_events=50, max_inflight=20)
    pub = _api.build_transport(settings)
    assert isinstance(pub, Publisher)
    for _ in range(200):
        if pub.stats()["connection"] == "connected":
            break
        threading.Event().wait(0.05)
    got, _, stop = _subscribe_in_thread(nats_server.url, f"{settings.namespace}.>", 2000)
    events = [new_event("mlflow.run.metrics", _metric(i)) for i in range(2000)]
    for ev in events:
        pub.emit(ev)
        assert pub.stats()["in_memory"] <= 50
    assert pub.flush(30).ok
    stats = pub.stats()
    pub.close()
    stop()
    assert [json.loads(d)["id"] for d in got] == [e.id for e in events]
    assert stats["spooled"] == 0
    assert stats["acked"] == 2000


def test_core_mode_spools_while_the_server_is_away(make_settings):
    """Core mode without a server writes to the spool (like JetStream mode) and delivers once it appears."""
    import socket

    from databricks_nats.testing import NatsServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(f"nats://127.0.0.1:{port}", mode="core", memory_max_events=50)
    pub = _api.build_transport(settings)
    events = [new_event("mlflow.run.metrics", _metric(i)) for i in range(300)]
    for ev in events:
        pub.emit(ev)
    assert not pub.flush(0.5).ok
    assert pub.stats()["spooled"] == 300
    with NatsServer(port=port) as srv:
        got, _, stop = _subscribe_in_thread(srv.url, f"{settings.namespace}.>", 300)
        assert pub.flush(30).ok
        pub.close()
        stop()
    assert [json.loads(d)["id"] for d in got] == [e.id for e in events]


def test_close_spools_what_is_still_queued_and_the_next_publisher_sends_it(nats_server, make_settings):
    """Events still queued when the publisher is closed without waiting are spooled, then sent by the next one."""
    settings = make_settings(nats_server)
    ids = []
    pub = _api.build_transport(make_settings("nats://127.0.0.1:1", connect_timeout=0.2))  # same spool directory
    for i in range(500):
        ev = new_event("mlflow.run.metrics", _metric(i))
        ids.append(ev.id)
        pub.emit(ev)
    pub.close(0)
    pub = _api.build_transport(settings)
    assert pub.stats()["replayed"] == 500
    assert pub.flush(20).ok
    pub.close()
    assert [m["envelope"]["id"] for m in stream_messages(nats_server.url, settings.stream_name)] == ids


def test_secured_counts_every_event_spilled_to_disk_during_a_long_outage(make_settings):
    """With memory full during an outage, stats()["secured"] keeps up with the events written to the spool."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pub = _api.build_transport(make_settings(f"nats://127.0.0.1:{port}", memory_max_events=50))
    try:
        for round_ in range(3):  # memory fills in the first round; later rounds go straight to disk
            for i in range(300):
                pub.emit(new_event("mlflow.run.metrics", _metric(round_ * 300 + i)))
            assert not pub.flush(0.3).ok
        deadline = time.monotonic() + 10
        while pub.stats()["secured"] < 900 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = pub.stats()
        assert stats["secured"] == 900, stats
        assert stats["dropped_total"] == 0
    finally:
        pub.close(0)


def test_closing_while_still_connecting_leaves_no_pending_task_behind(make_settings, caplog):
    """A publisher closed before it ever reached NATS ends its tasks: asyncio reports no destroyed pending task."""
    import gc
    import socket
    import time

    with socket.socket() as silent:  # accepts connections (the kernel does) but never says INFO
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        pub = _api.build_transport(make_settings(url, connect_timeout=30.0))
        pub.emit(new_event("mlflow.run.metrics", _metric(0)))
        time.sleep(0.3)  # the connect is under way, waiting for the server's INFO
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            pub.close(2)
            del pub
            gc.collect()
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
