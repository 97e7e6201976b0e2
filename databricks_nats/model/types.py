"""The built-in event types (see README "Event types"); importing this module registers them."""

from __future__ import annotations

from databricks_nats.model.catalog import EventType, register

__all__: list[str] = []

_RUN = {
    "experiment_id": "string",
    "run_id": "string",
    "run_name": "string?",
    "run_url": "string?",
    "artifact_uri": "string?",
}
_RUN_KEYS = ("experiment_id", "run_id")
_MODEL = {"name": "string", "model_uri": "string?", "catalog_name": "string?", "is_unity_catalog": "boolean"}

for _action, _extra in {
    "started": {"start_time": "integer?", "parent_run_id": "string?", "user": "string?"},
    "finished": {"status": "string", "duration_ms": "integer?", "metrics": "metrics"},
    "failed": {"status": "string", "duration_ms": "integer?", "metrics": "metrics"},
    "killed": {"status": "string", "duration_ms": "integer?", "metrics": "metrics"},
    "metrics": {"metrics": "metrics", "points": "integer", "final": "boolean"},
    "params": {"params": "object"},
    "tags": {"tags": "object"},
    "artifacts": {"files": "array", "file_count": "integer", "total_bytes": "integer", "path": "string?"},
    "inputs": {"datasets": "array"},
}.items():
    register(
        EventType(
            f"mlflow.run.{_action}",
            keys=_RUN_KEYS,
            dataref="run_url" if _action in ("started", "finished", "failed", "killed") else "artifact_uri",
            fields={**_RUN, **_extra},
            description=f"MLflow run {_action}",
        )
    )

for _action in ("logged", "finalized"):
    register(
        EventType(
            f"mlflow.logged_model.{_action}",
            keys=("experiment_id", "model_id"),
            dataref="model_uri",
            fields={
                "experiment_id": "string",
                "model_id": "string",
                "name": "string?",
                "source_run_id": "string?",
                "artifact_location": "string?",
                "model_uri": "string?",
                "flavors": "array",
                "status": "string?",
            },
            description=f"MLflow 3 LoggedModel {_action}",
        )
    )

for _action, _extra in {
    "registered": {},
    "deleted": {},
    "version_created": {"version": "string", "source": "string?", "run_id": "string?", "model_id": "string?"},
    "version_deleted": {"version": "string"},
    "alias_set": {"alias": "string", "version": "string"},
    "alias_deleted": {"alias": "string"},
    "stage_transitioned": {"version": "string", "stage": "string"},
    "version_tag_set": {"version": "string", "key": "string", "value": "string?"},
}.items():
    register(
        EventType(
            f"mlflow.model.{_action}",
            keys=("name",),
            dataref="model_uri",
            fields={**_MODEL, **_extra},
            description=f"MLflow registered model {_action.replace('_', ' ')}",
        )
    )

for _action, _extra in {
    "started": {},
    "progress": {
        "batch_id": "integer",
        "input_rows": "integer",
        "input_rows_per_second": "number?",
        "processed_rows_per_second": "number?",
        "sources": "array",
        "sink": "object",
    },
    "idle": {},
    "terminated": {"error_class": "string?", "error": "string?"},
}.items():
    register(
        EventType(
            f"spark.stream.{_action}",
            keys=("query_id",),
            fields={"query_id": "string", "run_id": "string", "name": "string?", "mlflow_run_id": "string?", **_extra},
            description=f"Structured Streaming query {_action}",
        )
    )

for _action in ("succeeded", "failed", "summary"):
    register(
        EventType(
            f"spark.execution.{_action}",
            keys=("app_id",),
            fields={
                "app_id": "string",
                "execution_id": "integer?",
                "description": "string?",
                "duration_ms": "integer?",
                "jobs": "integer?",
                "stages": "integer?",
                "error": "string?",
                "mlflow_run_id": "string?",
            },
            description=f"Spark SQL execution / action {_action}",
        )
    )

register(
    EventType(
        "data.table.updated",
        keys=("table",),
        dataref="location",
        fields={
            "table": "string",
            "location": "string?",
            "format": "string?",
            "version": "integer?",
            "operation": "string?",
        },
        description="A table has new data",
    )
)
