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
from databricks_nats.prefect import NatsSettings, bridge, forward_async, run_deployment_on_async


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
