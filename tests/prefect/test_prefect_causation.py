"""Causation through Prefect: a flow run the bridge started reports back with its event's chain; loops are cut."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

from test_prefect_deployments import _wait_flow_runs
from test_prefect_forward import read_stream

import databricks_nats
from databricks_nats.client import Client
from databricks_nats.prefect import NatsSettings, bridge, bridge_async, forward_async, run_deployment_on_async


def test_flow_run_reports_back_with_the_cause_and_its_own_completion_cannot_loop(
    live: dict[str, str], prefect_api: str, tmp_path: Path
) -> None:
    """Event → bridge → flow run → forwarder: same correlation id, one hop more, via the deployment; fed its own
    completion event, the bridge refuses it (no second flow run) and announces system.loop.detected."""
    from flows import publish_back
    from prefect.runner import Runner

    block = f"nats-{uuid.uuid4().hex[:8]}"
    NatsSettings.register_type_and_schema()
    NatsSettings(url=live["url"], workspace=live["workspace"], env=live["env"]).save(block)
    name = f"chain-{live['workspace']}"
    deployment = f"databricks-nats-publish-back/{name}"
    via = f"prefect:deployment/{deployment}"
    model = f"main.ml.{live['workspace']}"
    params = {"model": "name", "version": "version", "block": lambda event: block}
    cause = databricks_nats.emit("mlflow.model.alias_set", {"name": model, "alias": "champion", "version": "7"})
    assert cause is not None
    assert databricks_nats.flush(timeout=10).ok

    async def stream_has(event_type: str, flow_run_id: str) -> list[Any]:
        for _ in range(120):
            found = await asyncio.to_thread(read_stream, live, event_type)
            mine = [e for e in found if e.data.get("flow_run_id") == flow_run_id or event_type.startswith("custom.")]
            if mine:
                return mine
            await asyncio.sleep(0.5)
        raise AssertionError(f"no {event_type} for {flow_run_id} on NATS")

    async def scenario() -> dict[str, Any]:
        runner = Runner(name=f"runner-{name}", query_seconds=1, pause_on_shutdown=False)
        deployment_id = await runner.aadd_flow(publish_back, name=name)
        serving = asyncio.create_task(runner.start())
        stop = asyncio.Event()
        forwarding = asyncio.create_task(
            forward_async(tmp_path / "state.json", lookback=60, sweep_interval=2, stop=stop, **live)
        )
        try:
            started = await run_deployment_on_async(
                deployment, "mlflow.model.alias_set", parameters=params, start="all", max_events=1, **live
            )
            [flow_run_id] = [str(r) for r in started.flow_runs]
            await _wait_flow_runs(deployment_id, 1, {"COMPLETED"}, timeout=180)
            completed = await stream_has("prefect.flow_run.completed", flow_run_id)
            task_done = await stream_has("prefect.task_run.completed", flow_run_id)
            published = await stream_has("custom.model.promoted", flow_run_id)
            looped = await run_deployment_on_async(
                deployment,
                "prefect.flow_run.completed",
                match={"flow_run_id": flow_run_id},
                parameters=params,
                durable="loop",
                start="all",
                max_events=1,
                idle_timeout=60,
                **live,
            )
            await asyncio.sleep(2)  # a flow run it had (wrongly) created would be scheduled by now
            runs = await _wait_flow_runs(deployment_id, 1, {"COMPLETED"}, timeout=30)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await forwarding
            with contextlib.suppress(Exception):
                await runner.astop()
            serving.cancel()
            with contextlib.suppress(BaseException):
                await serving
        return {
            "flow_run_id": flow_run_id,
            "completed": completed,
            "task_done": task_done,
            "published": published,
            "looped": looped,
            "runs": runs,
        }

    got = asyncio.run(scenario())
    [completed] = got["completed"]
    assert completed.data["deployment_name"] == name
    assert completed.data["flow_name"] == "databricks-nats-publish-back"
    for event in [completed, *got["task_done"], *got["published"]]:
        assert event.causation is not None, event
        assert event.causation.causation_id == cause.id
        assert event.causation.correlation_id == cause.id  # the chain keeps its correlation id
        assert event.causation.hop == 1  # one hop more than the original event
        assert event.causation.via == (via,)
    assert {e.data["task_name"] for e in got["task_done"]} == {"databricks-nats-publish"}

    looped = got["looped"]
    assert looped.refused == 1
    assert list(looped.flow_runs) == []
    assert len(got["runs"]) == 1  # the deployment ran once: the loop was cut
    detected = [e for e in read_stream(live, "system.loop.detected") if e.data["target"] == via]
    assert len(detected) == 1
    assert detected[0].data["correlation_id"] == cause.id
    assert detected[0].data["event_id"] == completed.id
    assert "already went through" in detected[0].data["reason"]


def test_bridge_waits_for_a_stream_created_after_it_started(
    nats_server: Any, namespace: dict[str, str], prefect_api: str, tmp_path: Path, caplog: Any, eventually: Any
) -> None:
    """Started before the stream exists, the bridge says so once and how to create it, waits, then bridges."""
    settings = {"url": nats_server.url, **namespace}
    box: dict[str, Any] = {}
    caplog.set_level(logging.WARNING, logger="databricks_nats.prefect")
    worker = threading.Thread(
        target=lambda: box.update(result=bridge(start="all", max_events=1, idle_timeout=120, **settings))
    )
    worker.start()
    eventually(lambda: "does not exist yet" in caplog.text, 60, "the bridge saying it waits for the stream")
    assert worker.is_alive()  # waiting, not exited

    with Client(spool_dir=str(tmp_path / "spool"), **settings) as client:
        client.ensure_stream()
        event = client.emit("mlflow.model.alias_set", {"name": "m", "alias": "champion", "version": "1"})
        assert event is not None
        assert client.flush(10).ok
    worker.join(120)
    assert not worker.is_alive()
    assert list(box["result"].ids) == [event.id]
    waits = [r.getMessage() for r in caplog.records if "does not exist yet" in r.getMessage()]
    assert len(waits) == 1
    assert "databricks-nats streams ensure" in waits[0]


def test_a_flow_run_an_automation_started_carries_the_cause_and_a_loop_through_it_is_cut(
    live: dict[str, str], prefect_api: str, tmp_path: Path
) -> None:
    """Event → bridge → automation → flow run → forwarder → bridge → automation…: the flow runs an automation
    started on a bridged event are caused by it (Prefect's record of the action links them), so each lap is one hop
    deeper and the bridge's hop limit (3 here) cuts the loop after 3 flow runs, reported once. A plain ``emit``
    inside the flow (``caused_by_flow_run``) carries the flow run's causation."""
    from flows import echo
    from prefect.events import DeploymentEventTrigger
    from prefect.runner import Runner

    block = f"nats-{uuid.uuid4().hex[:8]}"
    NatsSettings.register_type_and_schema()
    NatsSettings(url=live["url"], workspace=live["workspace"], env=live["env"]).save(block)
    name = f"loop-{live['workspace']}"
    via = f"prefect:deployment/databricks-nats-echo/{name}"
    model = f"main.ml.{live['workspace']}"
    params = {"block": block, "note": "{{ event.id | string }}"}
    triggers = [
        DeploymentEventTrigger(
            expect={"databricks.mlflow.model.alias_set"},
            match={"prefect.resource.id": f"databricks.mlflow.model.{model}"},
            parameters=params,
        ),
        DeploymentEventTrigger(  # the loop: its own completion starts it again
            expect={"databricks.prefect.flow_run.completed"},
            match={"prefect.resource.id": "databricks.prefect.*", "databricks.data.deployment_name": name},
            parameters=params,
        ),
    ]
    cause = databricks_nats.emit("mlflow.model.alias_set", {"name": model, "alias": "champion", "version": "1"})
    assert cause is not None
    assert databricks_nats.flush(timeout=10).ok

    async def reported() -> list[Any]:
        for _ in range(360):
            found = await asyncio.to_thread(read_stream, live, "system.loop.detected")
            if found:
                return found
            await asyncio.sleep(0.5)
        raise AssertionError("no system.loop.detected on NATS")

    async def scenario() -> dict[str, Any]:
        runner = Runner(name=f"runner-{name}", query_seconds=1, pause_on_shutdown=False)
        deployment_id = await runner.aadd_flow(echo, name=name, triggers=triggers)
        serving = asyncio.create_task(runner.start())
        stop = asyncio.Event()
        forwarding = asyncio.create_task(
            forward_async(tmp_path / "state.json", lookback=60, sweep_interval=2, stop=stop, **live)
        )
        bridging = asyncio.create_task(bridge_async(start="all", stop=stop, hop_limit=3, **live))
        try:
            detected = await reported()
            runs = await _wait_flow_runs(deployment_id, 3, {"COMPLETED"}, timeout=120)
            await asyncio.sleep(3)  # a fourth run (wrongly) triggered would exist by now
            runs = await _wait_flow_runs(deployment_id, 3, {"COMPLETED"}, timeout=30)
        finally:
            stop.set()
            bridged = await bridging
            with contextlib.suppress(Exception):
                await forwarding
            with contextlib.suppress(Exception):
                await runner.astop()
            serving.cancel()
            with contextlib.suppress(BaseException):
                await serving
        return {"detected": detected, "runs": runs, "bridged": bridged}

    got = asyncio.run(scenario())
    assert len(got["runs"]) == 3  # the hop limit bounded the loop
    run_ids = {str(r.id) for r in got["runs"]}
    completed = [e for e in read_stream(live, "prefect.flow_run.completed") if e.data["flow_run_id"] in run_ids]
    by_hop = sorted(completed, key=lambda e: e.causation.hop if e.causation else -1)
    assert [e.causation.hop if e.causation else None for e in by_hop] == [1, 2, 3]
    assert all(e.causation and e.causation.correlation_id == cause.id for e in by_hop)
    assert by_hop[0].causation.causation_id == cause.id
    assert [e.causation.causation_id for e in by_hop[1:]] == [by_hop[0].id, by_hop[1].id]  # each lap: the last
    assert by_hop[0].causation.via == (via,)
    echoes = {e.data["note"]: e for e in read_stream(live, "custom.echo.sent")}
    assert echoes[cause.id].causation == by_hop[0].causation  # a plain emit inside the flow carries it too
    [report] = got["detected"]
    assert report.data["correlation_id"] == cause.id
    assert report.data["hop"] == 3
    assert report.data["target"] == "subscribe:prefect-bridge"
    assert got["bridged"].stopped_by == "stop"
