"""Prefect 3 integration (extra ``[prefect]``): NATS events start Prefect flows.

* ``bridge`` / ``bridge_async`` — forward events from a durable JetStream consumer to Prefect as Prefect
  events (name = CloudEvent type, stable resource id per event family, the CloudEvent as payload), so
  ``DeploymentEventTrigger(expect=..., match=...)`` starts flows natively. Also the long-lived process
  ``databricks-nats prefect-bridge`` (``cli``).
* ``run_deployment_on`` / ``run_deployment_on_async`` — run a deployment for each matching event, with
  parameters taken from the event (no Prefect automation needed).
* ``resource_id`` / ``prefect_event_fields`` — how a CloudEvent maps onto a Prefect event (``resources``).
* ``forward`` / ``forward_async`` — Prefect flow-run and task-run state changes → NATS (``forwarder``), also
  ``databricks-nats prefect-forward``.
* ``publish`` — a Prefect task emitting an event and waiting until it is stored (``tasks``).
* ``NatsSettings`` — a Prefect block with the NATS settings and credentials (``blocks``).
* ``flow_run_causation`` / ``causation_tag`` / ``caused_by_flow_run`` — the causation a bridged flow run carries
  (``lineage``: a tag from ``run_deployment_on``, Prefect's record of the action for an automation).

The names are imported on first use (so registering the CLI subcommand imports nothing else), and Prefect
itself only when a bridge or runner starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from databricks_nats._lazy import lazy_exports

__all__ = [
    "FAMILIES",
    "BridgeResult",
    "ForwardResult",
    "NatsSettings",
    "ParameterError",
    "Stop",
    "bridge",
    "bridge_async",
    "causation_tag",
    "caused_by_flow_run",
    "event_id_for",
    "flow_run_causation",
    "forward",
    "forward_async",
    "prefect_event_fields",
    "publish",
    "publish_event",
    "render_parameters",
    "resource_id",
    "run_deployment_on",
    "run_deployment_on_async",
    "stop_on_signals",
]

_WHERE = {
    "FAMILIES": ".resources",
    "prefect_event_fields": ".resources",
    "resource_id": ".resources",
    "BridgeResult": ".bridging",
    "Stop": ".bridging",
    "bridge": ".bridging",
    "bridge_async": ".bridging",
    "stop_on_signals": ".bridging",
    "ForwardResult": ".forwarder",
    "event_id_for": ".forwarder",
    "forward": ".forwarder",
    "forward_async": ".forwarder",
    "NatsSettings": ".blocks",
    "publish": ".tasks",
    "publish_event": ".tasks",
    "causation_tag": ".lineage",
    "caused_by_flow_run": ".lineage",
    "flow_run_causation": ".lineage",
    "ParameterError": ".deployments",
    "render_parameters": ".deployments",
    "run_deployment_on": ".deployments",
    "run_deployment_on_async": ".deployments",
}

if TYPE_CHECKING:
    from databricks_nats.integrations.prefect.blocks import NatsSettings
    from databricks_nats.integrations.prefect.bridging import (
        BridgeResult,
        Stop,
        bridge,
        bridge_async,
        stop_on_signals,
    )
    from databricks_nats.integrations.prefect.deployments import (
        ParameterError,
        render_parameters,
        run_deployment_on,
        run_deployment_on_async,
    )
    from databricks_nats.integrations.prefect.forwarder import ForwardResult, event_id_for, forward, forward_async
    from databricks_nats.integrations.prefect.lineage import causation_tag, caused_by_flow_run, flow_run_causation
    from databricks_nats.integrations.prefect.resources import FAMILIES, prefect_event_fields, resource_id
    from databricks_nats.integrations.prefect.tasks import publish, publish_event


__getattr__, __dir__ = lazy_exports(globals(), _WHERE)
