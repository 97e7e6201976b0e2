"""The built-in event types (see README "Event types"), declared as data: ``BUILTIN``.

``model.catalog`` registers them when it is imported; this module imports nothing but ``EventType``.
"""

from __future__ import annotations

from databricks_nats.model.eventtype import EventType

__all__ = ["BUILTIN"]

_TYPES: list[EventType] = []

_RUN = {
    "experiment_id": "string",
    "run_id": "string",
    "run_name": "string?",
    "run_url": "string?",
    "artifact_uri": "string?",
}
_RUN_KEYS = ("experiment_id", "run_id")
_MODEL = {
    "name": "string",
    "model_uri": "string?",
    "model_url": "string?",
    "catalog_name": "string?",
    "is_unity_catalog": "boolean",
}

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
    _TYPES.append(
        EventType(
            f"mlflow.run.{_action}",
            keys=_RUN_KEYS,
            dataref="run_url" if _action in ("started", "finished", "failed", "killed") else "artifact_uri",
            fields={**_RUN, **_extra},
            description=f"MLflow run {_action}",
        )
    )

for _action in ("logged", "finalized"):
    _TYPES.append(
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
                "model_url": "string?",
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
    _TYPES.append(
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
        "trigger_ms": "integer?",
        "batches": "integer",
        "rows_since_last": "integer",
        "sources": "array",
        "source_count": "integer",
        "sink": "object",
        "state_rows": "integer",
        "observed_metrics": "object",
    },
    "idle": {},
    "terminated": {"error_class": "string?", "error": "string?"},
}.items():
    _TYPES.append(
        EventType(
            f"spark.stream.{_action}",
            keys=("query_id",),
            fields={"query_id": "string", "run_id": "string", "name": "string?", "mlflow_run_id": "string?", **_extra},
            description=f"Structured Streaming query {_action}",
        )
    )

_EXECUTION = {
    "app_id": "string",
    "execution_id": "integer?",
    "kind": "string",
    "description": "string?",
    "job_group": "string?",
    "duration_ms": "integer",
    "jobs": "integer",
    "stages": "integer",
    "error": "string?",
    "error_class": "string?",
    "mlflow_run_id": "string?",
}
for _action, _fields in {
    "succeeded": _EXECUTION,
    "failed": _EXECUTION,
    "summary": {
        "app_id": "string",
        "executions": "integer",
        "duration_ms": "integer",
        "max_duration_ms": "integer",
        "jobs": "integer",
        "window_s": "number",
        "mlflow_run_ids": "array",
    },
}.items():
    _TYPES.append(
        EventType(
            f"spark.execution.{_action}",
            keys=("app_id",),
            fields=_fields,
            description="Short Spark executions, counted" if _action == "summary" else f"Spark SQL execution {_action}",
        )
    )

_TYPES.append(
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
            "mlflow_run_id": "string?",
        },
        description="A table has new data",
    )
)

for _action in ("granted", "denied"):
    _TYPES.append(
        EventType(
            f"system.auth.{_action}",
            keys=(),
            fields={
                "identity": "string?",  # oidc:<issuer>#<subject> or aws_iam:<arn>; never the token
                "kind": "string?",
                "rule": "string?",
                "reason": "string",
                "permissions": "object",
                "expires_at": "string?",
                "client": "object",
                "server": "string?",
                "suppressed": "integer",
            },
            description=f"The auth-callout service {_action} a connection",
        )
    )

# Orchestrators publishing back (issue 16): lean pointers to a run in the Airflow / Prefect UI.
_AIRFLOW_RUN = {
    "dag_id": "string",
    "run_id": "string",
    "state": "string",
    "logical_date": "string?",
    "run_type": "string?",
    "duration_ms": "integer?",
    "url": "string?",
    "assets": "array",  # URIs of the assets the run (task) produced
}
for _action in ("running", "success", "failed"):
    _TYPES.append(
        EventType(
            f"airflow.dag_run.{_action}",
            keys=("dag_id",),
            dataref="url",
            fields=_AIRFLOW_RUN,
            description=f"Airflow DAG run {_action}",
        )
    )
for _action in ("running", "success", "failed", "skipped", "up_for_retry"):
    _TYPES.append(
        EventType(
            f"airflow.task.{_action}",
            keys=("dag_id", "task_id"),
            dataref="url",
            fields={**_AIRFLOW_RUN, "task_id": "string", "try_number": "integer?", "map_index": "integer?"},
            description=f"Airflow task instance {_action.replace('_', ' ')}",
        )
    )
_PREFECT_RUN = {
    "flow_run_id": "string",
    "flow_name": "string",
    "deployment_name": "string?",
    "state": "string",  # the state's name (Completed, Failed…)
    "state_type": "string",  # its type (COMPLETED, FAILED…)
    "duration_ms": "integer?",
    "url": "string?",
}
for _action in ("running", "completed", "failed", "crashed", "cancelled"):
    _TYPES.append(
        EventType(
            f"prefect.flow_run.{_action}",
            keys=("flow_name",),
            dataref="url",
            fields=_PREFECT_RUN,
            description=f"Prefect flow run {_action}",
        )
    )
    _TYPES.append(
        EventType(
            f"prefect.task_run.{_action}",
            keys=("flow_name", "task_name"),
            dataref="url",
            fields={**_PREFECT_RUN, "task_run_id": "string", "task_name": "string", "flow_run_id": "string?"},
            description=f"Prefect task run {_action}",
        )
    )

_TYPES.append(
    EventType(
        "system.loop.detected",
        keys=(),
        fields={
            "event_id": "string",  # the event that was not acted on
            "event_type": "string?",
            "correlation_id": "string?",
            "hop": "integer",
            "via": "array",
            "target": "string?",  # the reactor that refused: airflow:dag/<id>, prefect:deployment/<name>, subscribe:…
            "reason": "string",
            "suppressed": "integer",
        },
        description="A reactor refused an event that would continue a loop (hop limit, or its own target again)",
    )
)

BUILTIN: tuple[EventType, ...] = tuple(_TYPES)
