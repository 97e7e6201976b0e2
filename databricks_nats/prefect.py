"""Prefect 3 (extra ``[prefect]``): NATS events start flows (``bridge``, ``run_deployment_on``), and flow-run and
task-run state changes go back to NATS (``forward``, the ``publish`` task, the ``NatsSettings`` block).

``NatsSettings`` and ``publish`` import Prefect when first used; the other names only when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from databricks_nats._lazy import lazy_exports
from databricks_nats.integrations.prefect import (
    FAMILIES,
    BridgeResult,
    ForwardResult,
    ParameterError,
    bridge,
    bridge_async,
    causation_tag,
    caused_by_flow_run,
    event_id_for,
    flow_run_causation,
    forward,
    forward_async,
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
    "ForwardResult",
    "NatsSettings",
    "ParameterError",
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

if TYPE_CHECKING:
    from databricks_nats.integrations.prefect.blocks import NatsSettings
    from databricks_nats.integrations.prefect.tasks import publish, publish_event

__getattr__, __dir__ = lazy_exports(
    globals(),
    {
        "NatsSettings": "databricks_nats.integrations.prefect.blocks",
        "publish": "databricks_nats.integrations.prefect.tasks",
        "publish_event": "databricks_nats.integrations.prefect.tasks",
    },
)
