"""Poison events (issue 13, item 6) against real nats-servers: subjects and sizes the server would refuse.

A custom event with 1,500 keys (a 7,912-character subject) exceeded the server's control line: the client
reconnected ~200 times a second and nothing after it was delivered, in that process and every later one (it
stayed in the spool); a server with ``max_payload: 1024`` did the same for ~1 KB events (the size floor
ignored the headers). Now: subjects are bounded (extra keys folded into a hash), every event is checked
against the server's limits before it is sent, what cannot fit is dead-lettered to ``<namespace>._dead.<reason>``
(counted ``dropped.poison``) and never blocks the others, and restarts after refusals back off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from databricks_nats import _api
from databricks_nats.model import subjects
from databricks_nats.model.events import Event, new_event
from databricks_nats.testing import NatsServer, read_stream
from databricks_nats.transport.publisher import Publisher


def _metric(i: int) -> dict[str, Any]:
    return {"experiment_id": "7", "run_id": "r1", "metrics": {"loss": 1.0 / (i + 1)}, "points": 1, "final": False}


def _server(tmp_path: Path, conf: str) -> NatsServer:
    path = tmp_path / "limits.conf"
    path.write_text(conf)
    return NatsServer(config=str(path))


def _poison(i: int, subject: str) -> Event:
    """An event whose subject was fixed before it reached us (an older version's spool, a preset subject)."""
    return Event("custom.thing.happened", {"i": i}, subject=subject)


def _deliver_between(settings: Any, middle: Event) -> tuple[list[Event], list[Event], dict[str, Any]]:
    """Five metric events, ``middle``, five more, through one real publisher: (before, after, its stats)."""
    pub = _api.build_transport(settings)
    assert isinstance(pub, Publisher)
    before = [new_event("mlflow.run.metrics", _metric(i)) for i in range(5)]
    after = [new_event("mlflow.run.metrics", _metric(i)) for i in range(5, 10)]
    try:
        for ev in [*before, middle, *after]:
            pub.emit(ev)
        assert pub.flush(20).ok
        return before, after, pub.stats()
    finally:
        pub.close()


def test_a_1500_key_event_gets_a_bounded_subject_and_everything_is_delivered(nats_server, make_settings):
    """The event of the report: 1,500 keys. Its subject is folded to at most MAX_SUBJECT characters, so it is
    delivered like any other, with the events around it, on one connection."""
    settings = make_settings(nats_server)
    big = new_event("custom.thing.happened", {"n": 1500}, keys=[f"key{i}" for i in range(1500)])
    before, after, stats = _deliver_between(settings, big)
    msgs = read_stream(nats_server.url, settings.stream_name)
    assert [m["envelope"]["id"] for m in msgs] == [e.id for e in [*before, big, *after]]
    folded = msgs[5]["subject"]
    assert len(folded) <= subjects.MAX_SUBJECT
    assert folded.startswith(f"{settings.namespace}.custom.thing.key0.key1.")
    assert ".~f" in folded
    assert folded.endswith(".happened")
    assert stats["connects"] == 1
    assert stats["dropped_total"] == 0


def test_a_subject_over_the_control_line_is_dead_lettered_and_never_blocks(nats_server, make_settings):
    """A 7,912-character subject (as left in a spool by an older version) is never sent as it is: it goes to
    <namespace>._dead.control_line with its envelope; the events around it are delivered on one connection."""
    settings = make_settings(nats_server)
    long_subject = f"{settings.namespace}.custom.thing." + ".".join(f"k{i:04d}" for i in range(1500)) + ".happened"
    assert len(long_subject) > 7000
    bad = _poison(0, long_subject)
    before, after, stats = _deliver_between(settings, bad)
    msgs = read_stream(nats_server.url, settings.stream_name)
    delivered = [m for m in msgs if "._dead." not in m["subject"]]
    assert [m["envelope"]["id"] for m in delivered] == [e.id for e in [*before, *after]]
    [dead] = [m for m in msgs if "._dead." in m["subject"]]
    assert dead["subject"] == f"{settings.namespace}._dead.control_line"
    assert dead["headers"]["Nats-Msg-Id"] == bad.id
    assert dead["envelope"]["id"] == bad.id
    assert dead["envelope"]["deadletterreason"] == "control_line"
    assert dead["envelope"]["deadlettersubject"] == long_subject  # the event is kept whole
    assert dead["envelope"]["type"] == "databricks.custom.thing.happened"
    assert "subject" not in dead["envelope"]  # carried once, as deadlettersubject
    assert stats["dropped"] == {"poison": 1}
    assert stats["errors"]["poison"] == 1
    assert stats["connects"] == 1
    assert stats["acked"] == 10


def test_a_poison_event_left_in_a_spool_does_not_block_the_next_process(nats_server, make_settings):
    """Poison spooled while NATS was away (and the process ended): the next publisher on that spool delivers
    the others and dead-letters it, instead of reconnecting forever."""
    settings = make_settings(nats_server)
    offline = _api.build_transport(make_settings("nats://127.0.0.1:1", connect_timeout=0.2))
    long_subject = f"{settings.namespace}.custom.thing." + "x" * 8000 + ".happened"
    events = [new_event("mlflow.run.metrics", _metric(i)) for i in range(3)]
    bad = _poison(1, long_subject)
    for ev in [events[0], bad, *events[1:]]:
        offline.emit(ev)
    offline.close(0)
    pub = _api.build_transport(settings)
    try:
        assert pub.stats()["replayed"] == 4
        assert pub.flush(20).ok
        stats = pub.stats()
    finally:
        pub.close()
    msgs = read_stream(nats_server.url, settings.stream_name)
    assert [m["envelope"]["id"] for m in msgs if "._dead." not in m["subject"]] == [e.id for e in events]
    assert [m["envelope"]["id"] for m in msgs if "._dead." in m["subject"]] == [bad.id]
    assert stats["dropped"] == {"poison": 1}
    assert stats["connects"] == 1


def test_a_server_with_a_smaller_control_line_refuses_once_then_the_event_is_dead_lettered(tmp_path, make_settings):
    """max_control_line is not in the server's INFO: a 600-character subject passes our default check, the
    server (max_control_line 512) closes the connection once; the largest in-flight event is then known to be
    over its limit and dead-lettered, the others delivered, and the client does not spin reconnecting."""
    with _server(tmp_path, "max_control_line: 512\n") as srv:
        settings = make_settings(srv)
        pub = _api.build_transport(settings)
        assert isinstance(pub, Publisher)
        assert pub.flush(10).ok  # connected, stream created
        keys = [f"{i}" + "k" * 90 for i in range(6)]  # six 91-character tokens: a ~640-character subject
        events = [new_event("mlflow.run.metrics", _metric(i)) for i in range(10)]
        bad = new_event("custom.thing.happened", {"n": 6}, keys=keys)
        try:
            for ev in [*events[:5], bad, *events[5:]]:
                pub.emit(ev)
            assert pub.flush(30).ok
            stats = pub.stats()
        finally:
            pub.close()
        msgs = read_stream(srv.url, settings.stream_name)
    assert sorted(m["envelope"]["id"] for m in msgs if "._dead." not in m["subject"]) == sorted(e.id for e in events)
    [dead] = [m for m in msgs if "._dead." in m["subject"]]
    assert dead["subject"] == f"{settings.namespace}._dead.control_line"
    assert dead["envelope"]["id"] == bad.id
    assert stats["dropped"] == {"poison": 1}
    assert stats["errors"]["server_refused"] == 1
    assert 2 <= stats["connects"] <= 3  # one refusal, one reconnect (not hundreds)


def test_several_distinct_oversized_subjects_cost_one_refusal_each_at_most(tmp_path, make_settings):
    """Three events over the server's control line, of different sizes: each refusal teaches a lower limit,
    so at most one reconnect per distinct size; every other event is delivered."""
    with _server(tmp_path, "max_control_line: 512\n") as srv:
        settings = make_settings(srv)
        pub = _api.build_transport(settings)
        assert isinstance(pub, Publisher)
        assert pub.flush(10).ok
        bad = [new_event("custom.thing.happened", {"n": n}, keys=["k" * 90] * n) for n in (6, 7, 8)]
        events = [new_event("mlflow.run.metrics", _metric(i)) for i in range(20)]
        try:
            for i, ev in enumerate(events):
                pub.emit(ev)
                if i % 6 == 5:
                    pub.emit(bad[i // 6])
            assert pub.flush(60).ok
            stats = pub.stats()
        finally:
            pub.close()
        msgs = read_stream(srv.url, settings.stream_name)
    assert sorted(m["envelope"]["id"] for m in msgs if "._dead." not in m["subject"]) == sorted(e.id for e in events)
    assert sorted(m["envelope"]["id"] for m in msgs if "._dead." in m["subject"]) == sorted(e.id for e in bad)
    assert stats["dropped"] == {"poison": 3}
    assert stats["connects"] <= 4


def test_a_server_with_max_payload_1024_gets_every_event_trimmed_to_fit_headers_included(tmp_path, make_settings):
    """max_payload 1024: ~1 KB events are trimmed so that headers plus payload fit (they were sent at 1,024
    bytes of payload plus headers and refused, forever); an event that can never fit (its envelope alone is
    larger) is dead-lettered; everything else is delivered on one connection."""
    with _server(tmp_path, "max_payload: 1024\n") as srv:
        settings = make_settings(srv)
        pub = _api.build_transport(settings)
        assert isinstance(pub, Publisher)
        events = [
            new_event(
                "mlflow.run.params",
                {"experiment_id": "1", "run_id": f"r{i}", "params": {f"p{j}": "x" * 40 for j in range(20 + i)}},
            )
            for i in range(10)
        ]
        huge_subject = f"{settings.namespace}.custom.thing." + "y" * 1500 + ".happened"  # > max_payload by itself
        bad = _poison(2, huge_subject)
        try:
            for ev in [*events[:5], bad, *events[5:]]:
                pub.emit(ev)
            assert pub.flush(20).ok
            stats = pub.stats()
        finally:
            pub.close()
        msgs = read_stream(srv.url, settings.stream_name)
    delivered = [m for m in msgs if "._dead." not in m["subject"]]
    assert [m["envelope"]["id"] for m in delivered] == [e.id for e in events]
    assert all(m["envelope"]["data"]["truncated"] is True for m in delivered)
    assert all(m["envelope"]["data"]["run_id"] == f"r{i}" for i, m in enumerate(delivered))
    [dead] = [m for m in msgs if "._dead." in m["subject"]]
    assert dead["subject"] == f"{settings.namespace}._dead.too_large"
    assert dead["envelope"]["id"] == bad.id
    assert dead["envelope"]["deadlettersubject"].startswith(huge_subject[:200] + "~")
    assert stats["dropped"] == {"poison": 1}
    assert stats["connects"] == 1


def test_an_event_jetstream_refuses_for_its_size_is_dead_lettered(nats_server, make_settings):
    """A stream whose max_msg_size is smaller than an event refuses it in the ack (err_code 10054): it is
    dead-lettered (its identity, trimmed to 1 KiB) instead of being re-sent forever by the ack timer."""
    import asyncio

    import nats

    from databricks_nats.transport.stream import wanted_config

    settings = make_settings(nats_server)

    async def create() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            config = wanted_config(settings)
            config.max_msg_size = 2048
            await nc.jetstream().add_stream(config)
        finally:
            await nc.close()

    asyncio.run(create())
    pub = _api.build_transport(settings)
    big = new_event("mlflow.run.params", {"experiment_id": "1", "run_id": "r", "params": {"p": "z" * 4000}})
    small = [new_event("mlflow.run.metrics", _metric(i)) for i in range(3)]
    try:
        for ev in [small[0], big, *small[1:]]:
            pub.emit(ev)
        assert pub.flush(20).ok
        stats = pub.stats()
    finally:
        pub.close()
    msgs = read_stream(nats_server.url, settings.stream_name)
    assert [m["envelope"]["id"] for m in msgs if "._dead." not in m["subject"]] == [e.id for e in small]
    [dead] = [m for m in msgs if "._dead." in m["subject"]]
    assert dead["subject"] == f"{settings.namespace}._dead.stream_limit"
    assert dead["envelope"]["id"] == big.id
    assert len(json.dumps(dead["envelope"])) <= 1100
    assert stats["dropped"] == {"poison": 1}


def test_restarts_after_refusals_back_off_instead_of_spinning(tmp_path, make_settings, monkeypatch):
    """With the refusal never learned (the mechanism above switched off), the server closes every connection
    the event is sent on: the restarts back off (capped exponential, jittered) — a handful in 3 s where the
    former loop reconnected ~200 times a second. A slower machine only lowers the count."""
    import time

    from databricks_nats.transport.connection import Link

    monkeypatch.setattr(Link, "learn_refusal", lambda self, text: None)
    with _server(tmp_path, "max_control_line: 512\n") as srv:
        settings = make_settings(srv)
        pub = _api.build_transport(settings)
        assert isinstance(pub, Publisher)
        try:
            assert pub.flush(10).ok
            pub.emit(new_event("custom.thing.happened", {"n": 6}, keys=["k" * 90] * 6))
            time.sleep(3.0)
            stats = pub.stats()
        finally:
            pub.close(0)
    assert stats["pending"] == 1  # kept (spooled), never dropped
    assert 2 <= stats["connects"] <= 15, stats["connects"]
