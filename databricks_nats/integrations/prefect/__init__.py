"""Prefect 3 integration (extra ``[prefect]``): NATS events start Prefect flows.

* ``bridge`` / ``bridge_async`` — forward events from a durable JetStream consumer to Prefect as Prefect
  events (name = CloudEvent type, stable resource id per event family, the CloudEvent as payload), so
  ``DeploymentEventTrigger(expect=..., match=...)`` starts flows natively. Also the long-lived process
  ``databricks-nats prefect-bridge``.
* ``run_deployment_on`` / ``run_deployment_on_async`` — run a deployment for each matching event, with
  parameters taken from the event (no Prefect automation needed).
* ``resource_id`` / ``prefect_event_fields`` — how a CloudEvent maps onto a Prefect event (``resources``).

Prefect is imported when a bridge or runner starts, not when this package is imported.
"""

from __future__ import annotations

from databricks_nats.integrations.prefect.bridge import BridgeResult, Stop, bridge, bridge_async, stop_on_signals
from databricks_nats.integrations.prefect.deployments import (
    ParameterError,
    render_parameters,
    run_deployment_on,
    run_deployment_on_async,
)
from databricks_nats.integrations.prefect.resources import FAMILIES, prefect_event_fields, resource_id

__all__ = [
    "FAMILIES",
    "BridgeResult",
    "ParameterError",
    "Stop",
    "bridge",
    "bridge_async",
    "prefect_event_fields",
    "render_parameters",
    "resource_id",
    "run_deployment_on",
    "run_deployment_on_async",
    "stop_on_signals",
]
