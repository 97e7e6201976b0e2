"""Flows started by NATS events: a deployment trigger on bridged events, and run_deployment_on."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

import databricks_nats
from databricks_nats.prefect import ParameterError, bridge_async, run_deployment_on


def _publish(event_type: str, data: dict[str, Any]) -> str:
    event = databricks_nats.emit(event_type, data)
    assert event is not None
    assert databricks_nats.flush(timeout=10).ok
    return event.id


async def _wait_flow_runs(deployment_id: Any, count: int, states: set[str], timeout: float) -> list[Any]:
    """The deployment's flow runs once ``count`` of them are in one of ``states``; fails after ``timeout`` s."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs: list[Any] = []
    deadline = asyncio.get_running_loop().time() + timeout
    async with get_client() as client:
        while asyncio.get_running_loop().time() < deadline:
            flt = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            runs = await client.read_flow_runs(deployment_filter=flt, limit=50)
            if len([r for r in runs if r.state and r.state.type.value in states]) >= count:
                return runs
            await asyncio.sleep(0.5)
    pytest.fail(f"{count} flow run(s) in {states} not within {timeout:g} s: {[(r.name, r.state) for r in runs]}")


def test_deployment_trigger_runs_a_flow_for_a_bridged_event(live: dict[str, str], prefect_api: str) -> None:
    """A DeploymentEventTrigger on a bridged event starts the flow a Runner serves, with parameters from the event."""
    from flows import promote
    from prefect.events import DeploymentEventTrigger
    from prefect.runner import Runner

    model = f"main.ml.{live['workspace']}"
    trigger = DeploymentEventTrigger(
        expect={"databricks.mlflow.model.alias_set"},
        match={"prefect.resource.id": f"databricks.mlflow.model.{model}", "databricks.data.alias": "champion"},
        parameters={
            "model": "{{ event.payload.data.name }}",
            "version": "{{ event.payload.data.version }}",
            "event_id": "{{ event.id | string }}",
        },
    )

    async def scenario() -> tuple[list[Any], str]:
        runner = Runner(name=f"runner-{live['workspace']}", query_seconds=1, pause_on_shutdown=False)
        deployment_id = await runner.aadd_flow(promote, name=f"on-champion-{live['workspace']}", triggers=[trigger])
        serving = asyncio.create_task(runner.start())
        try:
            await asyncio.to_thread(
                _publish, "mlflow.model.alias_set", {"name": model, "alias": "challenger", "version": "1"}
            )
            event_id = await asyncio.to_thread(
                _publish, "mlflow.model.alias_set", {"name": model, "alias": "champion", "version": "2"}
            )
            await bridge_async(start="all", max_events=2, idle_timeout=60, **live)
            runs = await _wait_flow_runs(deployment_id, 1, {"COMPLETED"}, timeout=180)
        finally:
            with contextlib.suppress(Exception):
                await runner.astop()
            serving.cancel()
            with contextlib.suppress(BaseException):
                await serving
        return runs, event_id

    runs, event_id = asyncio.run(scenario())
    assert len(runs) == 1  # the challenger alias matched no trigger
    assert runs[0].parameters == {"model": model, "version": "2", "event_id": event_id}


def test_run_deployment_on_creates_one_flow_run_per_event(live: dict[str, str], prefect_api: str) -> None:
    """run_deployment_on creates a flow run per matching event with parameters from it, and one only per event."""
    from flows import promote

    name = f"direct-{live['workspace']}"
    deployment_id = promote.to_deployment(name=name).apply()
    target = f"databricks-nats-promote/{name}"
    ids = [
        _publish("mlflow.model.version_created", {"name": "main.ml.churn", "version": str(v), "run_id": f"r{v}"})
        for v in (1, 2)
    ]
    _publish("mlflow.model.version_created", {"name": "main.ml.other", "version": "9"})
    params = {"model": "name", "version": "{{ data.version }}", "event_id": "{{ id }}"}
    first = run_deployment_on(
        target,
        "mlflow.model.version_created",
        match={"name": "main.ml.churn"},
        parameters=params,
        start="all",
        max_events=2,
        idle_timeout=60,
        **live,
    )
    # Another consumer reading the same events again (as after a crash before the acks) starts no new runs.
    again = run_deployment_on(
        target,
        "mlflow.model.version_created",
        match={"name": "main.ml.churn"},
        parameters=params,
        durable="replay",
        start="all",
        max_events=2,
        idle_timeout=60,
        **live,
    )
    assert list(first.ids) == ids
    assert list(again.flow_runs) == list(first.flow_runs)
    runs = asyncio.run(_wait_flow_runs(deployment_id, 2, {"SCHEDULED", "PENDING", "RUNNING", "COMPLETED"}, 60))
    assert len(runs) == 2
    got = sorted((r.parameters["version"], r.parameters["event_id"], r.parameters["model"]) for r in runs)
    assert got == [("1", ids[0], "main.ml.churn"), ("2", ids[1], "main.ml.churn")]


def test_missing_parameter_field_leaves_the_event_for_later(live: dict[str, str], prefect_api: str) -> None:
    """A parameter naming a field the event lacks stops the runner without acknowledging; a fixed mapping gets it."""
    from flows import promote

    name = f"fix-{live['workspace']}"
    promote.to_deployment(name=name).apply()
    target = f"databricks-nats-promote/{name}"
    event_id = _publish("mlflow.model.alias_set", {"name": "main.ml.churn", "alias": "champion", "version": "4"})
    with pytest.raises(ParameterError, match=r"'data\.stage'"):
        run_deployment_on(
            target,
            "mlflow.model.alias_set",
            parameters={"model": "name", "version": "stage"},
            start="all",
            idle_timeout=60,
            **live,
        )
    fixed = run_deployment_on(
        target, "mlflow.model.alias_set", parameters={"model": "name", "version": "version"}, idle_timeout=3, **live
    )
    assert list(fixed.ids) == [event_id]
    assert len(fixed.flow_runs) == 1
