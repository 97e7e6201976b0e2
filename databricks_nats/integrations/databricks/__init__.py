"""The Databricks integration: workspace/run context detection and the SDK-backed secret scope reader.

Importing this package imports neither ``databricks-sdk`` nor ``pyspark``; they are used only when present.
"""

from __future__ import annotations

from databricks_nats.integrations.databricks.context import (
    DatabricksContext,
    apply_context,
    as_event_context,
    detect_context,
)

__all__ = ["DatabricksContext", "apply_context", "as_event_context", "detect_context"]
