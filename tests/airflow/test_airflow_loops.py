"""NatsEventTrigger's loop guard, newest_only and paused= against a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import databricks_nats
from databricks_nats import Causation
from databricks_nats.integrations.airflow.triggers import NatsEventTrigger

WAIT = 30.0


def _trigger(settings: Any, **kwargs: Any) -> NatsEventTrigger:
    where = {"url": ",".join(settings.url), "workspace": settings.workspace, "env": settings.env}
    return NatsEventTrigger(**where, **kwargs)


def _emit(
    version: str, name: str = "main.ml.churn", causation: Causation | None = None, alias: str = "champion"
) -> str:
    data = {"name": name, "alias": alias, "version": version}
    event = databricks_nats.emit("mlflow.model.alias_set", data, causation=causation)
    assert event is not None
    assert databricks_nats.flush(timeout=10).ok
    return event.id


async def _next(agen: AsyncIterator[Any]) -> dict[str, Any]:
    return (await asyncio.wait_for(agen.__anext__(), WAIT)).payload  # type: ignore[no-any-return]


def _loop_reports(settings: Any) -> list[dict[str, Any]]:
    where = {"url": ",".join(settings.url), "workspace": settings.workspace, "env": settings.env}
    out = []
    with databricks_nats.subscribe("system.loop.detected", start="all", **where) as sub:
        while True:
            try:
                out.append(sub.next(3.0).envelope["data"])
            except TimeoutError:
                return out


def test_trigger_refuses_a_chain_back_at_its_dag_and_reports_it_once(live: Any, consumer_ready: Any) -> None:
    """An event whose chain already went through the trigger's DAG is acknowledged, counted, announced once per
    chain as system.loop.detected, and never handed to Airflow; other chains pass."""
    trigger = _trigger(live, event_type="mlflow.model.alias_set", dag_id="retrain")
    looped = Causation("cause-1", "root-1", 2, ("airflow:dag/retrain", "prefect:deployment/train"))

    async def main() -> list[str]:
        agen = trigger.run()
        first = asyncio.ensure_future(_next(agen))
        await consumer_ready(live, trigger.durable)
        _emit("1", causation=looped)
        _emit("2", causation=looped)  # the same chain again: counted, not announced again
        passing = _emit("3", causation=Causation("cause-2", "root-2", 2, ("airflow:dag/other",)))
        got = [(await first)["id"]]
        await agen.aclose()
        again = _trigger(live, event_type="mlflow.model.alias_set", dag_id="retrain").run()
        got.append((await _next(again))["id"])  # yielded but never resumed: delivered again
        pending = asyncio.ensure_future(_next(again))
        fresh = _emit("4")
        got.append((await pending)["id"])
        await again.aclose()
        assert got == [passing, passing, fresh]  # the refused ones were acknowledged: never delivered
        return got

    asyncio.run(main())
    assert trigger.guard is not None
    assert trigger.guard.refused == 2
    [report] = _loop_reports(live)
    assert (report["target"], report["correlation_id"], report["hop"]) == ("airflow:dag/retrain", "root-1", 2)
    assert report["via"] == ["airflow:dag/retrain", "prefect:deployment/train"]


def test_hop_limit_applies_without_a_dag(live: Any, consumer_ready: Any) -> None:
    """Without dag_id the trigger still refuses an event at the hop limit (default 8) and lets hop 7 through."""
    trigger = _trigger(live, event_type="mlflow.model.alias_set")

    async def main() -> str:
        agen = trigger.run()
        first = asyncio.ensure_future(_next(agen))
        await consumer_ready(live, trigger.durable)
        _emit("1", causation=Causation("c8", "deep", 8, ()))
        shallow = _emit("2", causation=Causation("c7", "ok", 7, ()))
        got = str((await first)["id"])
        await agen.aclose()
        assert got == shallow
        return got

    asyncio.run(main())
    [report] = _loop_reports(live)
    assert report["correlation_id"] == "deep"
    assert "hop limit 8" in report["reason"]


def test_newest_only_hands_over_the_newest_event_of_each_subject_and_alias(live: Any) -> None:
    """Two champion moves of one model arriving together give one trigger event, the newer; the same model's
    challenger move and another model's move in the same burst are kept (the key is subject and alias); later
    events still come through."""
    _emit("1")
    _emit("1", name="main.ml.other")
    _emit("5", alias="challenger")
    newest = _emit("2")
    trigger = _trigger(live, event_type="mlflow.model.alias_set", start="all", newest_only=True, coalesce=1.0)

    async def main() -> list[dict[str, Any]]:
        agen = trigger.run()
        got = [await _next(agen), await _next(agen), await _next(agen)]
        pending = asyncio.ensure_future(_next(agen))
        later = _emit("3")
        got.append(await pending)
        await agen.aclose()
        assert got[3]["id"] == later
        return got

    got = asyncio.run(main())
    assert [(e["data"]["name"], e["data"]["alias"], e["data"]["version"]) for e in got[:3]] == [
        ("main.ml.other", "champion", "1"),
        ("main.ml.churn", "challenger", "5"),
        ("main.ml.churn", "champion", "2"),
    ]
    assert got[2]["id"] == newest


def test_paused_skip_drops_what_the_stream_stored_before_the_trigger_ran(live: Any, consumer_ready: Any) -> None:
    """With paused="skip" an event stored while the trigger was not running (a paused DAG) is acknowledged and
    dropped; one stored after it started is delivered even when its time is an hour old (a spool sent after an
    outage, a skewed clock): the stream's sequence decides, not the clocks. With the default catch_up it would
    be delivered (test_restarted_trigger_loses_nothing)."""
    kwargs = {"event_type": "mlflow.model.alias_set", "durable": "paused-skip"}
    hour_ago = time.time_ns() - 3600 * 10**9

    async def main() -> None:
        agen = _trigger(live, **kwargs).run()
        first = asyncio.ensure_future(_next(agen))
        await consumer_ready(live, "paused-skip")
        before = _emit("1")
        assert (await first)["id"] == before
        await agen.aclose()  # the DAG is paused: Airflow stops its watchers
        _emit("2")  # stored while paused
        resumed = _trigger(live, paused="skip", **kwargs)
        again = resumed.run()
        pending = asyncio.ensure_future(_next(again))
        while resumed.skipped < 2:  # the trigger read its mark and dropped "1" and "2" (bounded by wait_for)
            await asyncio.sleep(0.05)
        data = {"name": "main.ml.churn", "alias": "champion", "version": "3"}
        assert databricks_nats.emit_many([("mlflow.model.alias_set", data, hour_ago)]) == 1
        assert databricks_nats.flush(timeout=10).ok
        late = await pending
        assert late["data"]["version"] == "3"  # an hour old by its time, stored after the trigger started
        after = _emit("4")
        assert (await _next(again))["id"] == after
        await again.aclose()
        assert resumed.skipped == 2  # "2", and "1" again: yielded but never resumed, so not acknowledged

    asyncio.run(asyncio.wait_for(main(), 3 * WAIT))
