"""Flows the Prefect tests deploy. The runner re-imports this file in a new process: keep it free of test code."""

from __future__ import annotations

from prefect import flow, task


@flow(name="databricks-nats-promote")
def promote(model: str, version: str, event_id: str = "") -> str:
    """Stands for a deployment step; returns what it was asked to promote."""
    return f"{model}@{version} ({event_id})"


@flow(name="databricks-nats-publish-back")
def publish_back(model: str, version: str, block: str) -> str:
    """Publishes its result back to NATS through the publish task (settings from a NatsSettings block)."""
    from databricks_nats.prefect import publish

    return str(publish("custom.model.promoted", {"model": model, "version": version}, keys=[model], block=block))


@task(name="double")
def double(x: int) -> int:
    return 2 * x


@flow(name="databricks-nats-steps")
def steps(n: int) -> int:
    """A flow with two task runs, for the forwarder."""
    return double(double(n))


@flow(name="databricks-nats-echo")
def echo(block: str, note: str = "") -> str:
    """Emits with a plain ``databricks_nats.emit`` inside ``caused_by_flow_run`` (settings from a NatsSettings block),
    flushes, and returns the event's id."""
    import databricks_nats
    from databricks_nats.prefect import NatsSettings, caused_by_flow_run

    databricks_nats.configure(**NatsSettings.load(block).settings())
    with caused_by_flow_run():
        event = databricks_nats.emit("custom.echo.sent", {"note": note}, keys=["echo"])
    assert event is not None
    assert databricks_nats.flush(30).ok
    return event.id
