"""Causation and loop protection: what an event emitted while handling another carries, and how a reactor
refuses a chain that feeds itself (hop limit, its own target again), counting it and announcing it once."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import databricks_nats
from databricks_nats.consumer import subscribe
from databricks_nats.loopguard import LoopGuard
from databricks_nats.model import catalog
from databricks_nats.model.causation import Causation, caused_by, current, loop_reason
from databricks_nats.model.events import Encoder, encode, new_event
from databricks_nats.testing import NatsServer, capture

ORIGINAL = {"id": "E0", "type": "databricks.mlflow.model.alias_set"}


def _metrics() -> Any:
    return new_event("mlflow.run.metrics", {"experiment_id": "1", "run_id": "r", "metrics": {"loss": 0.1}})


def test_an_event_emitted_while_handling_another_carries_its_causation() -> None:
    assert current() is None
    with caused_by(ORIGINAL, "airflow:dag/deploy") as first:
        event = _metrics()
        assert event.causation == first == Causation("E0", "E0", 1, ("airflow:dag/deploy",))
        second_envelope = {"id": "E1", **first.attributes()}
        with caused_by(second_envelope, "prefect:deployment/d/serve"):
            deeper = _metrics()
        assert current() == first  # the inner block ended
    assert current() is None
    assert deeper.causation == Causation("E1", "E0", 2, ("airflow:dag/deploy", "prefect:deployment/d/serve"))
    assert _metrics().causation is None  # outside: an original event


def test_the_envelope_carries_the_attributes_valid_against_its_schema_on_both_encoders() -> None:
    with caused_by({"id": "E1", "causationid": "E0", "correlationid": "E0", "hop": 3, "via": "a,b%2Cc"}, "t x"):
        event = _metrics()
    kw: dict[str, Any] = {"namespace": "dbx.ws.dev", "workspace": "ws", "env": "dev", "context": {"a": 1}}
    _, slow = encode(event, max_bytes=8192, **kw)
    _, fast = Encoder(**kw)(event, max_bytes=8192)
    assert fast == slow
    envelope = json.loads(fast)
    jsonschema.validate(envelope, catalog.envelope_schema())
    assert (envelope["causationid"], envelope["correlationid"], envelope["hop"]) == ("E1", "E0", 4)
    assert Causation.of(envelope) == Causation("E1", "E0", 4, ("a", "b,c", "t x"))  # commas survive, encoded


def test_an_explicit_causation_wins_over_the_context() -> None:
    explicit = Causation("X", "X", 1)
    with caused_by(ORIGINAL):
        assert new_event("mlflow.run.metrics", {}, causation=explicit).causation == explicit


@pytest.mark.parametrize(
    ("envelope", "target", "reason"),
    [
        (ORIGINAL, "airflow:dag/a", None),  # an original event
        ({"id": "E", "causationid": "C", "correlationid": "C", "hop": 7}, "t", None),
        ({"id": "E", "causationid": "C", "correlationid": "C", "hop": 8}, "t", "hop limit 8 reached"),
        ({"id": "E", "causationid": "C", "hop": 1, "via": "airflow:dag/a"}, "airflow:dag/a", "already went through"),
        ({"id": "E", "causationid": "C", "hop": 1, "via": "airflow:dag/a"}, "airflow:dag/b", None),
        ({"id": "E", "causationid": "C", "hop": "junk"}, "t", None),  # unreadable hop: 0
        ({"id": "E", "type": "databricks.system.loop.detected", "causationid": "C", "hop": 9}, "t", None),  # a report
    ],
)
def test_loop_reason(envelope: dict[str, Any], target: str, reason: str | None) -> None:
    found = loop_reason(envelope, target, limit=8)
    assert (found is None) if reason is None else (found is not None and reason in found)


def test_a_refused_event_is_counted_and_announced_once_per_chain() -> None:
    looping = {"id": "E5", "type": "databricks.airflow.task.succeeded", "causationid": "E4", "correlationid": "E0"}
    with capture() as events:
        guard = LoopGuard("airflow:dag/train", hop_limit=8)
        assert guard.allows(ORIGINAL)
        for hop in (8, 9, 10):
            assert not guard.allows({**looping, "hop": hop})
    assert guard.refused == 3
    announced = events.of_type("system.loop.detected")
    assert len(announced) == 1
    data = announced[0].data
    assert (data["event_id"], data["event_type"], data["correlation_id"], data["hop"]) == (
        "E5",
        "airflow.task.succeeded",
        "E0",
        8,
    )
    assert data["target"] == "airflow:dag/train"
    assert "hop limit 8" in data["reason"]


@pytest.fixture
def live(nats_server: NatsServer, namespace: dict[str, str], tmp_path: Path) -> Any:
    return databricks_nats.configure(url=nats_server.url, spool_dir=str(tmp_path / "spool"), **namespace)


def test_what_a_subscribe_loop_body_emits_is_caused_by_the_event_at_hand(live: Any) -> None:
    original = databricks_nats.emit("mlflow.model.alias_set", {"name": "m", "alias": "prod", "version": "3"})
    assert original is not None
    assert databricks_nats.flush(10).ok
    with subscribe("mlflow.model.alias_set", durable="deployer", start="all") as sub:
        for event in sub:
            reaction = databricks_nats.emit("myteam.deploy.started", {"model": event.data["name"]}, keys=["m"])
            break
    assert reaction is not None
    assert reaction.causation == Causation(original.id, original.id, 1, ("subscribe:deployer",))
    assert databricks_nats.flush(10).ok
    with subscribe("myteam.deploy.started", start="all", keys=["m"]) as sub:
        received = sub.next(timeout=10)
    assert received.causation == reaction.causation  # it travelled in the envelope


def test_a_subscription_that_feeds_itself_is_cut_and_reported(live: Any) -> None:
    """An echo re-publishes what it receives to the subject it reads: its echo comes back through the same
    target and is refused (acknowledged, counted, reported once); an unrelated event still gets through."""
    databricks_nats.emit("myteam.ping.sent", {"n": 0}, keys=["p"])
    assert databricks_nats.flush(10).ok

    def stop_later() -> None:  # another thread: an original event, outside any causation
        databricks_nats.emit("myteam.ping.sent", {"stop": True}, keys=["p"])
        databricks_nats.flush(10)

    handed = []
    with subscribe("myteam.ping.sent", durable="echo", start="all", keys=["p"]) as sub:
        for event in sub:
            handed.append(event)
            if event.data.get("stop"):
                break
            databricks_nats.emit("myteam.ping.sent", {"n": len(handed)}, keys=["p"])  # the echo
            assert databricks_nats.flush(10).ok
            threading.Thread(target=stop_later).start()
    assert [(e.data.get("n"), e.data.get("stop")) for e in handed] == [(0, None), (None, True)]
    assert sub.guard.refused == 1
    assert databricks_nats.flush(10).ok
    with subscribe("system.loop.detected", start="all") as reports:
        report = reports.next(timeout=10)
    assert report.data["target"] == "subscribe:echo"
    assert "already went through subscribe:echo" in report.data["reason"]
    assert report.causation is not None
    assert report.causation.causation_id == report.data["event_id"]


def test_a_chain_refused_again_is_reported_again_later_with_what_was_held_back() -> None:
    looping = {"id": "E5", "type": "databricks.airflow.task.succeeded", "causationid": "E4", "correlationid": "E0"}
    now = [0.0]
    with capture() as events:
        guard = LoopGuard("airflow:dag/train", hop_limit=8, report_every=60.0, clock=lambda: now[0])
        for hop in (8, 9, 10):  # one report, two held back
            assert not guard.allows({**looping, "hop": hop})
        now[0] = 61.0
        assert not guard.allows({**looping, "hop": 11})  # due again: reports the two held back
        assert not guard.allows({**looping, "hop": 12})
        assert not guard.allows({**looping, "id": "F1", "correlationid": "F0", "hop": 8})  # another chain: its own
    assert guard.refused == 6
    reports = [(e.data["correlation_id"], e.data["hop"], e.data["suppressed"]) for e in events]
    assert reports == [("E0", 8, 0), ("E0", 11, 2), ("F0", 8, 0)]


def _alias_set(version: str) -> Any:
    event = databricks_nats.emit("mlflow.model.alias_set", {"name": "m", "alias": "prod", "version": version})
    assert event is not None
    assert databricks_nats.flush(10).ok
    return event


def _leave(how: str) -> None:
    if how == "raise":
        raise LookupError("the loop body failed")


@pytest.mark.parametrize("how", ["break", "raise"])
@pytest.mark.parametrize("loop", ["for", "async for"])
def test_a_loop_body_s_causation_is_current_only_while_it_handles_the_event(live: Any, loop: str, how: str) -> None:
    """After ``break`` or an exception the event's causation is no longer current (the enclosing one is again),
    whether or not the loop's iterator is finalised yet (an async generator is closed later, by the event loop)."""
    original = _alias_set("3")
    outer = Causation("O", "O", 1, ("airflow:dag/outer",))
    seen: dict[str, Any] = {}

    def check_after() -> None:
        seen["after"] = current()
        seen["emitted"] = databricks_nats.emit("myteam.deploy.started", {}, keys=["m"])

    def sync_loop() -> None:
        with caused_by(outer):
            try:
                for _event in subscribe("mlflow.model.alias_set", durable="d", start="all"):
                    seen["inside"] = current()
                    _leave(how)
                    break
            except LookupError:
                pass
            check_after()
        seen["outside"] = current()

    async def async_loop() -> None:
        with caused_by(outer):
            try:
                async for _event in subscribe("mlflow.model.alias_set", durable="d", start="all"):
                    seen["inside"] = current()
                    _leave(how)
                    break
            except LookupError:
                pass
            check_after()
        seen["outside"] = current()

    if loop == "for":
        sync_loop()
    else:
        asyncio.run(async_loop())
    assert seen["inside"] == Causation(original.id, original.id, 1, ("subscribe:d",))
    assert seen["after"] == outer
    assert seen["emitted"].causation == outer
    assert seen["outside"] is None


def test_the_next_event_replaces_the_previous_one_s_causation(live: Any) -> None:
    first, second = _alias_set("1"), _alias_set("2")

    async def consume() -> list[Any]:
        inside = []
        async for _event in subscribe("mlflow.model.alias_set", start="all"):
            inside.append(current())
            if len(inside) == 2:
                break
        return [*inside, current()]

    causes = asyncio.run(consume())
    assert [c.causation_id if c else None for c in causes] == [first.id, second.id, None]


def test_an_event_the_subscription_ignores_is_no_loop(live: Any) -> None:
    """The match comes before the loop guard: a looping event nobody would have acted on is neither refused nor
    reported; one that matches is (the guard still works)."""
    deep = Causation("C", "C", 8)
    for alias in ("staging", "prod"):
        databricks_nats.emit("mlflow.model.alias_set", {"name": "m", "alias": alias, "version": "1"}, causation=deep)
    wanted = _alias_set("2")  # an original event, matching
    sub = subscribe("mlflow.model.alias_set", match={"alias": "prod"}, start="all")
    callable_sub = subscribe("mlflow.model.alias_set", match=lambda e: e.data["version"] == "2", start="all")
    with capture() as reports:  # the reports (the subscriptions read with the settings they were made with)
        with sub:
            got = sub.next(timeout=10)
        with callable_sub:
            also = callable_sub.next(timeout=10)
    assert got.id == also.id == wanted.id
    assert sub.guard.refused == 1  # the matching prod event, 8 hops deep
    assert callable_sub.guard.refused == 0  # neither deep event matches
    assert [r.data["event_type"] for r in reports.of_type("system.loop.detected")] == ["mlflow.model.alias_set"]
