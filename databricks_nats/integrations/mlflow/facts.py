"""The fixed id of an MLflow change, the same whoever announces it: the hook in the process that made the
change, or the webhook receiver told by the MLflow server (``databricks-nats webhook-receiver``).

The id is ``derived_id(event type, the fields that identify the change)``: the stream's de-duplication
(``Nats-Msg-Id``, within its duplicate window: ``stream_duplicate_window``, 1 h by default) stores a change seen
by both once. The
same change repeated within the window (the alias set to the version it already points at) is stored once
too: it changes nothing. Changes with no identifying fields here get a fresh id (UUIDv7).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from databricks_nats.model.ids import derived_id

__all__ = ["IDENTITY", "fact_id"]

# event type -> the data fields that identify one change of that kind
IDENTITY: dict[str, tuple[str, ...]] = {}
for _entity in ("model", "prompt"):
    IDENTITY.update(
        {
            f"mlflow.{_entity}.registered" if _entity == "model" else "mlflow.prompt.created": ("name",),
            f"mlflow.{_entity}.deleted": ("name",),
            f"mlflow.{_entity}.tag_set": ("name", "key", "value"),
            f"mlflow.{_entity}.tag_deleted": ("name", "key"),
            f"mlflow.{_entity}.version_created": ("name", "version"),
            f"mlflow.{_entity}.version_deleted": ("name", "version"),
            f"mlflow.{_entity}.version_tag_set": ("name", "version", "key", "value"),
            f"mlflow.{_entity}.version_tag_deleted": ("name", "version", "key"),
            f"mlflow.{_entity}.alias_set": ("name", "alias", "version"),
            f"mlflow.{_entity}.alias_deleted": ("name", "alias"),
        }
    )
IDENTITY.update(
    {
        "mlflow.model.renamed": ("previous_name", "name"),
        "mlflow.model.stage_transitioned": ("name", "version", "stage"),
        "mlflow.model.version_status_changed": ("name", "version", "status"),
        "mlflow.run.started": ("run_id",),
        "mlflow.run.finished": ("run_id",),
        "mlflow.run.failed": ("run_id",),
        "mlflow.run.killed": ("run_id",),
        "mlflow.experiment.created": ("experiment_id",),
        # a trace (or an assessment) a hooked client exports and a hooked tracking server stores: one event
        "mlflow.trace.logged": ("trace_id",),
        "mlflow.assessment.logged": ("trace_id", "assessment_id"),
    }
)


def fact_id(event_type: str, data: Mapping[str, Any]) -> str | None:
    """The derived id of this change, or None (a fresh id) when its type has no identifying fields or one of them
    is missing (None; an empty string is a value)."""
    fields = IDENTITY.get(event_type)
    if fields is None:
        return None
    parts = [data.get(f) for f in fields]
    if any(p is None for p in parts):  # not known (an assessment without its id): a fresh id, never a false match
        return None
    return derived_id(event_type, *parts)
