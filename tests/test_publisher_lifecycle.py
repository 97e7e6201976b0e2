"""The publisher's lifecycle against a real nats-server: stream provisioning when not allowed, deterministic shutdown.

Issue 13, items 10 and 13.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import pytest

from databricks_nats import _api
from databricks_nats.model.events import new_event
from databricks_nats.testing import read_stream
from databricks_nats.transport.publisher import Publisher


def _metric(i: int) -> dict[str, Any]:
    return {"experiment_id": "7", "run_id": "r1", "metrics": {"loss": 1.0 / (i + 1)}, "points": 1, "final": False}


async def _stream_exists(url: str, name: str) -> bool:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url)
    try:
        await nc.jetstream().stream_info(name)
        return True
    except NotFoundError:
        return False
    finally:
        await nc.close()


def test_auto_create_stream_off_keeps_events_spooled_and_never_creates_the_stream(nats_server, make_settings):
    """Item 10: with ``auto_create_stream=False`` and no stream, nothing creates one; events stay pending and
    spooled, the refusal is reported (``errors.no_stream``), and they are delivered once a stream appears."""
    from databricks_nats.transport.stream import ensure_stream_async

    settings = make_settings(nats_server, auto_create_stream=False)
    pub = _api.build_transport(settings)
    assert isinstance(pub, Publisher)
    events = [new_event("mlflow.run.metrics", _metric(i)) for i in range(5)]
    try:
        for ev in events:
            pub.emit(ev)
        result = pub.flush(2.5)  # > ack_timeout (1 s): at least one re-send met no stream either
        assert not result.ok
        assert result.pending == 5
        assert not asyncio.run(_stream_exists(nats_server.url, settings.stream_name))
        stats = pub.stats()
        assert stats["errors"].get("no_stream", 0) >= 1, stats
        assert stats["dropped_total"] == 0
        assert stats["acked"] == 0
        assert stats["spooled"] == 5  # written behind: on disk while no stream takes them

        async def create() -> None:
            import nats

            nc = await nats.connect(nats_server.url)
            try:
                await ensure_stream_async(nc.jetstream(), settings)
            finally:
                await nc.close()

        asyncio.run(create())  # an operator creates it: the retries deliver
        assert pub.flush(20).ok
    finally:
        pub.close()
    assert [m["envelope"]["id"] for m in read_stream(nats_server.url, settings.stream_name)] == [e.id for e in events]


def test_shutdown_ends_a_connect_that_swallows_its_cancellation(make_settings, caplog, monkeypatch):
    """Item 13: close() cancels its tasks and awaits every one, with no timed window. nats-py's connect retry
    loop swallows a cancellation that lands in its ``_close`` (``except (CancelledError, TimeoutError): pass``)
    and keeps going; the former shutdown waited 1 s and closed the loop with it pending ("Task was destroyed
    but it is pending"), and its spool was still locked for the next process. Such a task is cancelled again
    until it ends; the event is spooled and the next publisher adopts it."""
    from nats.aio.client import Client

    swallowed = []

    async def swallowing_connect(self: Any, *args: Any, **kwargs: Any) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # as nats-py does in Client._close, then it retries

    monkeypatch.setattr(Client, "connect", swallowing_connect)
    settings = make_settings("nats://127.0.0.1:1")
    pub = _api.build_transport(settings)
    assert isinstance(pub, Publisher)
    pub.emit(new_event("mlflow.run.metrics", _metric(0)))
    time.sleep(0.2)  # the connect is under way
    thread = pub._thread
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        pub.close(0)
        thread.join(30)
        assert not thread.is_alive()
        del pub
        gc.collect()
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
    assert swallowed == [True]
    again = _api.build_transport(make_settings("nats://127.0.0.1:1"))
    try:
        assert again.stats()["replayed"] == 1
    finally:
        again.close(0)


@pytest.mark.parametrize("run", range(3))
def test_closing_while_connecting_to_a_silent_server_ends_every_task(make_settings, caplog, run):
    """A publisher closed while its connect waits for the server's INFO ends all its tasks (repeated)."""
    import socket

    with socket.socket() as silent:  # accepts connections (the kernel does) but never says INFO
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        pub = _api.build_transport(make_settings(f"nats://127.0.0.1:{silent.getsockname()[1]}", connect_timeout=30.0))
        assert isinstance(pub, Publisher)
        pub.emit(new_event("mlflow.run.metrics", _metric(0)))
        time.sleep(0.1 * run)
        thread = pub._thread
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            pub.close(0.5)
            thread.join(30)
            del pub
            gc.collect()
    assert not thread.is_alive()
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
