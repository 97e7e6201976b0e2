"""Spark: ``attach``/``detach`` the listeners, ``table_updated`` pointers and ``read_events`` (needs pyspark)."""

from databricks_nats.integrations.spark import (
    EVENT_LOG_SCHEMA,
    Attachment,
    attach,
    attached,
    detach,
    read_events,
    settle,
    table_updated,
)

__all__ = ["EVENT_LOG_SCHEMA", "Attachment", "attach", "attached", "detach", "read_events", "settle", "table_updated"]
