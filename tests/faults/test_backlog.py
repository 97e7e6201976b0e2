"""A backlog drain never starves new events (issue 13, item 12), against a real nats-server.

Before: while a backlog on disk drained (200k events at 14k/s), every new event went to the spool behind it
and waited for the whole backlog. Now new events take the live lane (memory) and go out as soon as the
backlog batch already read back is sent. Checked on the stream's own order, not on times.
"""

from __future__ import annotations

import time
from typing import Any

from databricks_nats import _api
from databricks_nats.model.events import new_event
from databricks_nats.testing import read_stream
from databricks_nats.transport.publisher import Publisher

BACKLOG = 30_000


def _metric(i: int) -> dict[str, Any]:
    return {"experiment_id": "7", "run_id": "r1", "metrics": {"loss": 1.0 / (i + 1)}, "points": 1, "final": False}


def test_new_events_overtake_a_draining_backlog_and_nothing_is_lost_or_repeated(nats_server, make_settings):
    """30,000 events left on disk by a process that could not reach NATS are replayed by the next one; events
    emitted while that backlog drains are stored long before its end (old: after all of it). Every event is
    stored exactly once, and the backlog itself keeps its order."""
    settings = make_settings(nats_server, ack_timeout=5.0)
    offline = _api.build_transport(make_settings("nats://127.0.0.1:1", connect_timeout=0.2))
    backlog = [new_event("mlflow.run.metrics", _metric(i)) for i in range(BACKLOG)]
    for ev in backlog:
        offline.emit(ev)
    offline.close(0)

    pub = _api.build_transport(settings)
    assert isinstance(pub, Publisher)
    live = []
    try:
        assert pub.stats()["replayed"] == BACKLOG
        deadline = time.monotonic() + 30
        while pub.stats()["acked"] < 1000 and time.monotonic() < deadline:  # the drain is under way
            time.sleep(0.005)
        assert pub.stats()["pending"] > BACKLOG // 3, "the backlog drained before the test could emit"
        for i in range(20):
            ev = new_event("mlflow.run.metrics", {**_metric(i), "run_id": "live"})
            live.append(ev)
            pub.emit(ev)
            time.sleep(0.002)
        assert pub.flush(60).ok
        stats = pub.stats()
    finally:
        pub.close()
    ids = [m["envelope"]["id"] for m in read_stream(nats_server.url, settings.stream_name)]
    assert len(ids) == len(set(ids)) == BACKLOG + len(live)
    position = {event_id: n for n, event_id in enumerate(ids)}
    assert [position[e.id] for e in backlog] == sorted(position[e.id] for e in backlog)  # the backlog in order
    last_live = max(position[e.id] for e in live)
    assert last_live < position[backlog[-1].id] - BACKLOG // 3, (last_live, len(ids))  # well before the end
    assert stats["duplicates"] == 0
    assert stats["dropped_total"] == 0


def test_live_lane_events_written_behind_during_a_backlog_are_sent_once(nats_server, make_settings):
    """Live-lane events that write-behind puts on disk (server down for a moment: nothing is acked) are not
    read back a second time when the backlog's cursor reaches them: every event stored once, none re-sent."""
    settings = make_settings(nats_server, memory_max_events=500, max_inflight=50)
    offline = _api.build_transport(make_settings("nats://127.0.0.1:1", connect_timeout=0.2))
    backlog = [new_event("mlflow.run.metrics", _metric(i)) for i in range(3000)]
    for ev in backlog:
        offline.emit(ev)
    offline.close(0)
    pub = _api.build_transport(settings)
    assert isinstance(pub, Publisher)
    live = []
    try:
        for i in range(300):
            ev = new_event("mlflow.run.metrics", {**_metric(i), "run_id": "live"})
            live.append(ev)
            pub.emit(ev)
            if i % 50 == 0:
                time.sleep(0.06)  # past the write-behind delay: live events reach the disk too
        assert pub.flush(60).ok
        stats = pub.stats()
    finally:
        pub.close()
    ids = [m["envelope"]["id"] for m in read_stream(nats_server.url, settings.stream_name)]
    assert sorted(ids) == sorted(e.id for e in [*backlog, *live])
    assert stats["duplicates"] == 0
    assert stats["published"] == len(ids)  # nothing sent twice
