"""``table_updated``: announce that a table has new data, with its location, format and Delta version."""

from __future__ import annotations

import logging
from typing import Any

from databricks_nats.client import current_client
from databricks_nats.integrations.spark import _compat
from databricks_nats.integrations.spark.runs import current_run_id

__all__ = ["describe_table", "history_entry", "table_updated"]

log = logging.getLogger("databricks_nats.spark")


def describe_table(spark: Any, name: str) -> dict[str, Any]:
    """Full name, location and format of a table from ``DESCRIBE TABLE EXTENDED`` (classic and Connect)."""
    info = {
        str(r["col_name"]).strip(): str(r["data_type"] or "").strip()
        for r in spark.sql(f"DESCRIBE TABLE EXTENDED {_quote(name)}").collect()
    }
    parts = [info.get("Catalog"), info.get("Database"), info.get("Table")]
    full = ".".join(p for p in parts if p) or name
    fmt = (info.get("Provider") or "").lower() or None
    return {"table": full, "location": info.get("Location") or None, "format": fmt}


def history_entry(row: Any) -> dict[str, Any]:
    """Version and operation from the newest row of Delta's ``DESCRIBE HISTORY``."""
    data = row.asDict() if hasattr(row, "asDict") else dict(row)
    version = data.get("version")
    return {"version": int(version) if version is not None else None, "operation": data.get("operation")}


def _delta_history(spark: Any, name: str) -> dict[str, Any]:
    rows = spark.sql(f"DESCRIBE HISTORY {_quote(name)} LIMIT 1").collect()
    return history_entry(rows[0]) if rows else {}


def _quote(name: str) -> str:
    return ".".join(f"`{part.replace('`', '``')}`" for part in name.split("."))


def table_updated(
    spark: Any,
    name: str,
    *,
    version: int | None = None,
    operation: str | None = None,
    **extra: Any,
) -> Any:
    """Publish ``data.table.updated`` for ``name`` (``catalog.schema.table``); never raises (fail-open).

    Location and format come from the catalog; for Delta tables the newest version and operation come
    from the table history unless given. Extra keyword arguments travel in the event's data.
    """
    data: dict[str, Any] = {"table": name, "location": None, "format": None, "version": version, "operation": operation}
    try:
        data.update(describe_table(spark, name))
        if data["format"] == "delta" and version is None:
            data.update(_delta_history(spark, name))
    except Exception as e:  # noqa: BLE001 - the pointer is still worth sending with what is known
        log.warning("databricks-nats: could not describe table %s (%s); publishing the name only", name, e)
    if operation is not None:
        data["operation"] = operation
    try:
        data["mlflow_run_id"] = _compat.local_run_id(spark) if _compat.has_jvm(spark) else current_run_id()
    except Exception:  # noqa: BLE001 - correlation is best effort
        data["mlflow_run_id"] = None
    return current_client().emit("data.table.updated", {**extra, **data})
