"""Prefect 3 integration (extra ``[prefect]``): NATS events start Prefect flows.

* ``bridge`` / ``bridge_async`` — forward events from a durable JetStream consumer to Prefect as Prefect
  events (name = CloudEvent type, stable resource id per event family, the CloudEvent as payload), so
  ``DeploymentEventTrigger(expect=..., match=...)`` starts flows natively. Also the long-lived process
  ``databricks-nats prefect-bridge`` (``cli``).
* ``run_deployment_on`` / ``run_deployment_on_async`` — run a deployment for each matching event, with
  parameters taken from the event (no Prefect automation needed).
* ``resource_id`` / ``prefect_event_fields`` — how a CloudEvent maps onto a Prefect event (``resources``).

The names are imported on first use (so registering the CLI subcommand imports nothing else), and Prefect
itself only when a bridge or runner starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from databricks_nats._lazy import lazy_exports

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

_WHERE = {
    "FAMILIES": ".resources",
    "prefect_event_fields": ".resources",
    "resource_id": ".resources",
    "BridgeResult": ".bridging",
    "Stop": ".bridging",
    "bridge": ".bridging",
    "bridge_async": ".bridging",
    "stop_on_signals": ".bridging",
    "ParameterError": ".deployments",
    "render_parameters": ".deployments",
    "run_deployment_on": ".deployments",
    "run_deployment_on_async": ".deployments",
}

if TYPE_CHECKING:
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
    from databricks_nats.integrations.prefect.resources import FAMILIES, prefect_event_fields, resource_id


__getattr__, __dir__ = lazy_exports(globals(), _WHERE)
