"""The built-in event types (see README "Event types"), declared as data: ``BUILTIN``.

``model.catalog`` registers them when it is imported; this module imports nothing but ``EventType``.
"""

from __future__ import annotations

from databricks_nats.model.eventtype import EventType

__all__ = ["BUILTIN"]

_TYPES: list[EventType] = []


def _family(
    entity: str,
    actions: dict[str, dict[str, str]] | tuple[str, ...],
    *,
    keys: tuple[str, ...],
    fields: dict[str, str],
    what: str,
    dataref: str | None = None,
) -> None:
    """``<entity>.<action>`` for each action: the shared fields, plus the action's own (when a mapping)."""
    extras = actions if isinstance(actions, dict) else {a: {} for a in actions}
    for action, extra in extras.items():
        _TYPES.append(
            EventType(
                f"{entity}.{action}",
                keys=keys,
                dataref=dataref,
                fields={**fields, **extra},
                description=f"{what} {action.replace('_', ' ')}",
            )
        )


_RUN = {
    "experiment_id": "string",
    "run_id": "string",
    "run_name": "string?",
    "run_url": "string?",
    "artifact_uri": "string?",
}
_RUN_KEYS = ("experiment_id", "run_id")
_RUN_DATAREF = {a: "run_url" for a in ("started", "finished", "failed", "killed", "deleted", "restored")}
_RUN_DATAREF["evaluated"] = "results_uri"
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
    "deleted": {},
    "restored": {},
    "evaluated": {  # mlflow.evaluate / mlflow.genai.evaluate finished in this run
        "metrics": "metrics",
        "results_uri": "string?",  # the results table (an artifact of the run), when one was logged
        "evaluator": "string?",  # mlflow.evaluate or mlflow.genai.evaluate
        "rows": "integer?",
    },
    "artifacts": {"files": "array", "file_count": "integer", "total_bytes": "integer", "path": "string?"},
    "inputs": {"datasets": "array"},
}.items():
    _TYPES.append(
        EventType(
            f"mlflow.run.{_action}",
            keys=_RUN_KEYS,
            dataref=_RUN_DATAREF.get(_action, "artifact_uri"),
            fields={**_RUN, **_extra},
            description=f"MLflow run {_action}",
        )
    )

_family(
    "mlflow.logged_model",
    ("logged", "finalized"),
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
    what="MLflow 3 LoggedModel",
)

_TAG = {"key": "string", "value": "string?"}
_family(
    "mlflow.model",
    {
        "registered": {},
        "deleted": {},
        "renamed": {"previous_name": "string"},
        "description_updated": {"version": "string?"},  # the model's, or one version's (never the text)
        "tag_set": _TAG,
        "tag_deleted": {"key": "string"},
        "version_created": {
            "version": "string",
            "source": "string?",
            "run_id": "string?",
            "model_id": "string?",
            "status": "string?",
        },
        "version_deleted": {"version": "string"},
        "version_status_changed": {"version": "string", "status": "string", "previous_status": "string?"},
        "alias_set": {"alias": "string", "version": "string"},
        "alias_deleted": {"alias": "string"},
        "stage_transitioned": {"version": "string", "stage": "string"},
        "version_tag_set": {"version": "string", **_TAG},
        "version_tag_deleted": {"version": "string", "key": "string"},
    },
    keys=("name",),
    dataref="model_uri",
    fields=_MODEL,
    what="MLflow registered model",
)

# The prompt registry (MLflow 3): prompts are never announced as models.
_family(
    "mlflow.prompt",
    {
        "created": {},
        "version_created": {"version": "string"},
        "alias_set": {"alias": "string", "version": "string"},
        "alias_deleted": {"alias": "string"},
        "tag_set": _TAG,
        "tag_deleted": {"key": "string"},
        "version_tag_set": {"version": "string", **_TAG},
        "version_tag_deleted": {"version": "string", "key": "string"},
        "deleted": {},
        "version_deleted": {"version": "string"},
    },
    keys=("name",),
    dataref="prompt_uri",
    fields={"name": "string", "prompt_uri": "string", "prompt_url": "string?"},
    what="MLflow prompt",
)

_family(
    "mlflow.experiment",
    {"created": {}, "renamed": {"previous_name": "string?"}, "deleted": {}, "restored": {}},
    keys=("experiment_id",),
    dataref="experiment_url",
    fields={
        "experiment_id": "string",
        "name": "string?",
        "artifact_location": "string?",
        "experiment_url": "string?",
    },
    what="MLflow experiment",
)

# GenAI (MLflow 3): traces and assessments are pointers (ids, counts, timings), never inputs, outputs or text.
_TRACE = {"experiment_id": "string", "trace_id": "string", "trace_url": "string?"}
_TYPES.append(
    EventType(
        "mlflow.trace.logged",
        keys=("experiment_id",),
        dataref="trace_url",
        fields={
            **_TRACE,
            "status": "string",  # OK, ERROR, IN_PROGRESS
            "duration_ms": "integer?",
            "span_count": "integer?",
            "token_usage": "object?",  # {input_tokens, output_tokens, total_tokens} when recorded
            "run_id": "string?",  # the run the trace belongs to (mlflow.sourceRun)
            "model_id": "string?",  # the logged model it was made with
            "request_time": "integer?",  # ms since the epoch
            "sample_rate": "number",  # 1.0 unless traces_mode = sample:<rate>
            "coalesced": "integer",  # traces of this experiment not announced on their own since the last one
        },
        description="MLflow trace logged",
    )
)
_TYPES.append(
    EventType(
        "mlflow.assessment.logged",
        keys=("experiment_id",),
        dataref="trace_url",
        fields={
            **_TRACE,
            "assessment_id": "string?",
            "name": "string",
            "kind": "string",  # feedback | expectation
            "source_type": "string?",  # HUMAN, LLM_JUDGE, CODE
            "source_id": "string?",
            "value_type": "string?",  # boolean, number, string, object…: the value's type, not its text
            "value": "number?",  # numbers and booleans (as 1/0) only
            "error": "boolean",
            "run_id": "string?",
        },
        description="MLflow assessment (feedback or expectation) logged on a trace",
    )
)

_family(
    "spark.stream",
    {
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
    },
    keys=("query_id",),
    fields={"query_id": "string", "run_id": "string", "name": "string?", "mlflow_run_id": "string?"},
    what="Structured Streaming query",
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

_family(
    "system.auth",
    ("granted", "denied"),
    keys=(),
    fields={
        "identity": "string?",  # oidc:<issuer>#<subject>, databricks:<host>#<id> or aws_iam:<arn>; never the token
        "kind": "string?",
        "rule": "string?",
        "reason": "string",
        "permissions": "object",
        "expires_at": "string?",
        "client": "object",
        "server": "string?",
        "suppressed": "integer",
    },
    what="A connection the auth-callout service",
)

# Observability (issue 18): publishers say they are alive; the monitor says when delivery got slow.
_PUBLISHER = {
    "publisher_id": "string",  # <host>-<pid>-<random>: one per publishing client, stable for its life
    "stats": "object",  # the client's stats() (counters, queue, spool, connection)
    "compute": "object",  # kind (classic, serverless, local…), cluster or job ids when known
    "versions": "object",  # databricks_nats, python, mlflow, pyspark, runtime
}
_family(
    "system.publisher",
    {
        "health": {
            "interval_s": "number",  # the next heartbeat is due within this many seconds
            "state": "string",  # connected, reconnecting, spooling, closed
            "queue_depth": "integer",
            "spool_bytes": "integer",
            "oldest_unacked_age_s": "number?",
        },
        "stopped": {"reason": "string"},
    },
    keys=("publisher_id",),
    fields=_PUBLISHER,
    what="Publisher",
)
_TYPES.append(
    EventType(
        "system.latency.degraded",
        keys=(),
        fields={
            "p50_ms": "number",
            "p99_ms": "number",
            "bound_ms": "number",  # the configured p99 bound that was crossed
            "window_s": "number",
            "events": "integer",  # events measured in the window
            "worst": "array",  # the sources/types with the highest p99: [{source, type, p99_ms}]
        },
        description="Publish-to-stream latency p99 crossed its bound (databricks-nats monitor)",
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
_family(
    "airflow.dag_run", ("running", "success", "failed"), keys=("dag_id",), dataref="url", fields=_AIRFLOW_RUN,
    what="Airflow DAG run",
)  # fmt: skip
_family(
    "airflow.task",
    ("running", "success", "failed", "skipped", "up_for_retry"),
    keys=("dag_id", "task_id"),
    dataref="url",
    fields={**_AIRFLOW_RUN, "task_id": "string", "try_number": "integer?", "map_index": "integer?"},
    what="Airflow task instance",
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
_PREFECT_STATES = ("running", "completed", "failed", "crashed", "cancelled")
_family(
    "prefect.flow_run",
    _PREFECT_STATES,
    keys=("flow_name",),
    dataref="url",
    fields=_PREFECT_RUN,
    what="Prefect flow run",
)
_family(
    "prefect.task_run",
    _PREFECT_STATES,
    keys=("flow_name", "task_name"),
    dataref="url",
    fields={**_PREFECT_RUN, "task_run_id": "string", "task_name": "string", "flow_run_id": "string?"},
    what="Prefect task run",
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

# Databricks job notifications (a webhook notification destination), turned into events by
# ``databricks-nats webhook-receiver``: jobs.on_start / on_success / on_failure /
# on_duration_warning_threshold_exceeded / on_streaming_backlog_exceeded. Lean pointers: ids and names.
_family(
    "databricks.job_run",
    ("started", "succeeded", "failed", "duration_exceeded", "backlog_exceeded"),
    keys=("job_id",),
    dataref="run_url",
    fields={
        "job_id": "string",
        "job_name": "string?",
        "run_id": "string",
        "parent_run_id": "string?",  # a task notification: the job run the task run belongs to
        "task_key": "string?",  # a task notification: the task
        "run_url": "string?",  # when the receiver knows the workspace URL
        "duration_ms": "integer?",  # when the notification carries one
        "workspace_id": "string?",
        "notification": "string",  # Databricks' event_type, e.g. jobs.on_failure
    },
    what="Databricks job run (notification)",
)

BUILTIN: tuple[EventType, ...] = tuple(_TYPES)
