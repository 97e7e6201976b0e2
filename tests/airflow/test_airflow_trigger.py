"""NatsEventTrigger.run() against a real nats-server: delivery, filters, durable resume, restarts, once mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from airflow._shared.module_loading import import_string
from airflow.triggers.base import TriggerEvent

import databricks_nats
from databricks_nats.integrations.airflow.triggers import NatsEventTrigger
from databricks_nats.testing import NatsServer

WAIT = 30.0  # bound of every wait for an event


def _trigger(settings: Any, **kwargs: Any) -> NatsEventTrigger:
    where = {"url": ",".join(settings.url), "workspace": settings.workspace, "env": settings.env}
    return NatsEventTrigger(**where, **kwargs)


def _revive(trigger: NatsEventTrigger) -> NatsEventTrigger:
    """What the triggerer does with a stored trigger: import the class path, call it with the kwargs."""
    classpath, kwargs = trigger.serialize()
    return import_string(classpath)(**kwargs)  # type: ignore[no-any-return]


def _emit(event_type: str, data: dict[str, Any]) -> str:
    event = databricks_nats.emit(event_type, data)
    assert event is not None
    assert databricks_nats.flush(timeout=10).ok
    return event.id


async def _next(agen: AsyncIterator[TriggerEvent]) -> dict[str, Any]:
    event = await asyncio.wait_for(agen.__anext__(), WAIT)
    assert isinstance(event, TriggerEvent)
    return event.payload  # type: ignore[no-any-return]


def test_published_event_becomes_trigger_event(live: Any, consumer_ready: Any) -> None:
    """A published event matching type and data fields is yielded as a TriggerEvent carrying the CloudEvent."""
    trigger = _trigger(live, event_type="mlflow.model.alias_set", match={"name": "main.ml.churn", "alias": "champion"})

    async def main() -> dict[str, Any]:
        agen = trigger.run()
        first = asyncio.ensure_future(_next(agen))
        await consumer_ready(live, trigger.durable)
        _emit("mlflow.model.alias_set", {"name": "main.ml.churn", "alias": "challenger", "version": "6"})
        _emit("mlflow.model.alias_set", {"name": "main.ml.other", "alias": "champion", "version": "1"})
        _emit("mlflow.model.version_created", {"name": "main.ml.churn", "version": "7"})
        wanted = _emit("mlflow.model.alias_set", {"name": "main.ml.churn", "alias": "champion", "version": "7"})
        payload = await first
        await agen.aclose()
        assert payload["id"] == wanted
        return payload

    payload = asyncio.run(main())
    assert payload["specversion"] == "1.0"
    assert payload["type"] == "databricks.mlflow.model.alias_set"
    assert payload["data"]["version"] == "7"
    assert payload["data"]["alias"] == "champion"
    assert payload["subject"].endswith(".mlflow.model.main%2Eml%2Echurn.alias_set")


def test_where_keeps_runs_with_a_metric_below_threshold(live: Any, consumer_ready: Any) -> None:
    """A where condition on a nested metric lets through only the finished runs whose metric is below the bound."""
    trigger = _trigger(live, event_type="mlflow.run.finished", where=[["metrics__accuracy__value", "<", 0.8]])

    def finished(run_id: str, accuracy: Any) -> str:
        metrics = {} if accuracy is None else {"accuracy": {"value": accuracy, "step": 3, "timestamp": 1}}
        return _emit("mlflow.run.finished", {"experiment_id": "42", "run_id": run_id, "metrics": metrics})

    async def main() -> list[str]:
        agen = trigger.run()
        first = asyncio.ensure_future(_next(agen))
        await consumer_ready(live, trigger.durable)
        finished("good", 0.93)
        finished("no-metric", None)
        finished("nan", "NaN")
        low = [finished("bad", 0.61), finished("worse", 0.2)]
        got = [(await first)["id"], (await _next(agen))["id"]]
        await agen.aclose()
        assert got == low
        return got

    asyncio.run(main())


def test_restarted_trigger_loses_nothing(live: Any, consumer_ready: Any) -> None:
    """A trigger stopped mid-stream and revived from its serialized form resumes its durable consumer: nothing lost."""
    trigger = _trigger(live, event_type="mlflow.model.version_created", match={"name": "m"})

    async def main() -> None:
        agen = trigger.run()
        first = asyncio.ensure_future(_next(agen))
        await consumer_ready(live, trigger.durable)
        ids = [_emit("mlflow.model.version_created", {"name": "m", "version": str(v)}) for v in (1, 2)]
        assert (await first)["id"] == ids[0]
        assert (await _next(agen))["id"] == ids[1]  # yielded, never resumed: not acknowledged
        await agen.aclose()  # the triggerer stops (shutdown, redistribution)
        ids += [_emit("mlflow.model.version_created", {"name": "m", "version": str(v)}) for v in (3, 4)]
        again = _revive(trigger).run()
        got = [(await _next(again))["id"] for _ in range(3)]
        await again.aclose()
        assert got == ids[1:]  # the unacknowledged one again, then what was published while stopped

    asyncio.run(main())


def test_trigger_survives_a_nats_server_restart(
    fresh_server: NatsServer, make_settings: Any, consumer_ready: Any
) -> None:
    """While the server is down the trigger retries; events published after it returns are yielded, none lost."""
    settings = make_settings(fresh_server)
    databricks_nats.configure(
        url=fresh_server.url, spool_dir=settings.spool_dir, workspace=settings.workspace, env=settings.env
    )
    databricks_nats.ensure_stream()
    trigger = _trigger(settings, event_type="mlflow.model.alias_set")

    async def main() -> None:
        agen = trigger.run()
        first = asyncio.ensure_future(_next(agen))
        await consumer_ready(settings, trigger.durable)
        before = _emit("mlflow.model.alias_set", {"name": "m", "alias": "a", "version": "1"})
        assert (await first)["id"] == before
        pending = asyncio.ensure_future(_next(agen))
        await asyncio.to_thread(fresh_server.stop)
        await asyncio.sleep(1.0)  # an outage the trigger sees (and retries through), not an assertion
        await asyncio.to_thread(fresh_server.start)
        after = _emit("mlflow.model.alias_set", {"name": "m", "alias": "b", "version": "2"})
        assert (await pending)["id"] == after
        await agen.aclose()

    asyncio.run(main())


def test_once_acknowledges_then_returns(live: Any, consumer_ready: Any) -> None:
    """A deferral trigger (once=True) acks its event before yielding it and ends; the next run gets the next event."""
    kwargs = {"event_type": "mlflow.model.version_created", "durable": "sensor-once", "start": "all"}
    ids = [_emit("mlflow.model.version_created", {"name": "m", "version": str(v)}) for v in (1, 2)]

    async def main() -> list[str]:
        got = []
        for _ in range(2):
            agen = _trigger(live, once=True, **kwargs).run()
            got.append((await _next(agen))["id"])
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(agen.__anext__(), WAIT)
        return got

    assert asyncio.run(main()) == ids
