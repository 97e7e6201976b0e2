"""The Databricks integration: workspace/run context detection and the SDK-backed secret scope reader, offered
to the core as the ports ``DatabricksContextProvider`` and ``DatabricksSecrets`` (``databricks_nats.ports``).

Importing this package imports neither ``databricks-sdk`` nor ``pyspark``; they are used only when present.
"""

from __future__ import annotations

from databricks_nats.integrations.databricks.context import (
    DatabricksContext,
    apply_context,
    as_event_context,
    detect_context,
)
from databricks_nats.integrations.databricks.ports import DatabricksContextProvider, DatabricksSecrets

__all__ = [
    "DatabricksContext",
    "DatabricksContextProvider",
    "DatabricksSecrets",
    "apply_context",
    "as_event_context",
    "detect_context",
]
