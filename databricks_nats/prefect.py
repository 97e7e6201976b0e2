"""Prefect 3 (extra ``[prefect]``): ``bridge`` NATS events into Prefect events, or ``run_deployment_on`` events."""

from databricks_nats.integrations.prefect import (
    FAMILIES,
    BridgeResult,
    ParameterError,
    bridge,
    bridge_async,
    prefect_event_fields,
    render_parameters,
    resource_id,
    run_deployment_on,
    run_deployment_on_async,
    stop_on_signals,
)

__all__ = [
    "FAMILIES",
    "BridgeResult",
    "ParameterError",
    "bridge",
    "bridge_async",
    "prefect_event_fields",
    "render_parameters",
    "resource_id",
    "run_deployment_on",
    "run_deployment_on_async",
    "stop_on_signals",
]
