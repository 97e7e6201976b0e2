"""``publish``: a Prefect task that puts an event on NATS ("results publish back") and waits until it is stored.

    from prefect import flow
    from databricks_nats.prefect import publish

    @flow
    def train(model: str) -> None:
        version = ...
        publish("ml.model.trained", {"model": model, "version": version}, keys=[model], block="prod")

It goes through the library's durable publisher (spool, retries, ``Nats-Msg-Id``) and then flushes, so the
task completes only once JetStream acknowledged the event; a flush that times out fails the task (Prefect's
retries then apply: the retry publishes a new event — give ``retries`` only where a repeat is harmless).
Inside a flow run a NATS event started (``run_deployment_on``, or an automation on a bridged event), the event
carries the causation of that NATS event (one hop deeper, ``via`` the deployment; ``lineage``). Returns the
event's id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect.tasks import task

from databricks_nats.integrations.prefect.lineage import flow_run_causation

__all__ = ["publish", "publish_event"]


def publish_event(
    event_type: str,
    data: Mapping[str, Any] | None = None,
    *,
    keys: Any = None,
    dataref: str | None = None,
    block: str | None = None,
    timeout: float = 30.0,
    **settings: Any,
) -> str:
    """Emit one event (caused by the flow run's triggering event, if any), flush it, return its id.

    With ``block`` (a saved ``NatsSettings``) or keyword ``settings`` a client of its own is used and closed;
    otherwise the process's default client (``configure`` / ``DATABRICKS_NATS_*``). Raises ``PublishError``
    when the event cannot be created and ``FlushTimeout`` when it is not stored within ``timeout`` seconds.
    """
    from databricks_nats.client import Client, current_client
    from databricks_nats.errors import FlushTimeout, PublishError

    if block is not None:
        from databricks_nats.integrations.prefect.blocks import NatsSettings

        loaded = NatsSettings.load(block, _sync=True)
        settings = {**loaded.settings(), **settings}
    own = Client(**settings) if settings else None
    client = own if own is not None else current_client()
    try:
        event = client.emit(event_type, data, keys=keys, dataref=dataref, causation=flow_run_causation())
        if event is None:
            raise PublishError(f"event {event_type!r} could not be created (see the log)")
        flushed = client.flush(timeout)
        if not flushed.ok:
            raise FlushTimeout(flushed.pending, timeout)
        return event.id
    finally:
        if own is not None:
            own.close()


publish = task(name="databricks-nats-publish", retries=0)(publish_event)
