"""Where an event comes from: workspace, cluster, notebook, job run, task and identity.

Each field is taken from the first source that knows it, in this order:

1. explicit settings (``workspace`` when it is a numeric workspace id),
2. the Databricks runtime's REPL context (``dbruntime.databricks_repl_context.get_context()``),
3. Spark conf (``spark.databricks.workspaceUrl``, ``spark.databricks.clusterUsageTags.*``) — only when
   ``pyspark.sql`` is already imported and a session is active (never starts or imports Spark),
4. environment variables (``DATABRICKS_RUNTIME_VERSION``, ``DB_CLUSTER_ID``, ``DB_CLUSTER_NAME``, …),
5. job parameters passed by the bundle (``nats_workspace_id``, ``nats_job_id``, ``nats_job_run_id``,
   ``nats_task_key``, ``nats_env``) as notebook widgets or ``--name=value`` arguments,
6. the Databricks SDK (``get_workspace_id()``, ``current_user.me()``): once per process, bounded by
   ``context_timeout``, only for what is still missing.

Off Databricks everything is ``None`` and the workspace stays ``local``; nothing here ever raises.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from databricks_nats.jobparams import job_parameters
from databricks_nats.settings import Settings

__all__ = ["DatabricksContext", "apply_context", "as_event_context", "detect_context"]

_FIELDS = (
    "workspace_id",
    "workspace_url",
    "env",
    "cluster_id",
    "cluster_name",
    "notebook_path",
    "job_id",
    "job_run_id",
    "task_run_id",
    "task_key",
    "user",
    "runtime_version",
)


@dataclass(frozen=True)
class DatabricksContext:
    """The detected context; ``sources`` names the source of each known field."""

    workspace_id: str | None = None
    workspace_url: str | None = None
    env: str | None = None
    cluster_id: str | None = None
    cluster_name: str | None = None
    notebook_path: str | None = None
    job_id: str | None = None
    job_run_id: str | None = None
    task_run_id: str | None = None
    task_key: str | None = None
    user: str | None = None
    runtime_version: str | None = None
    sources: tuple[tuple[str, str], ...] = ()

    @property
    def on_databricks(self) -> bool:
        return self.runtime_version is not None or self.cluster_id is not None


Source = Callable[[], Mapping[str, Any]]


def _repl() -> Mapping[str, Any]:
    if "dbruntime" not in sys.modules and "DATABRICKS_RUNTIME_VERSION" not in os.environ:
        return {}
    from dbruntime.databricks_repl_context import get_context  # type: ignore[import-not-found]  # Databricks only

    ctx = get_context()
    if ctx is None:
        return {}

    def attr(*names: str) -> Any:
        for n in names:
            v = getattr(ctx, n, None)
            if v not in (None, ""):
                return v
        return None

    return {
        "workspace_id": attr("workspaceId"),
        "workspace_url": attr("workspaceUrl", "browserHostName"),
        "cluster_id": attr("clusterId"),
        "notebook_path": attr("notebookPath"),
        "job_id": attr("jobId"),
        "job_run_id": attr("jobRunId", "multitaskParentRunId"),
        "task_run_id": attr("idInJob", "currentRunId"),
        "task_key": attr("taskKey"),
        "user": attr("userName", "user"),
    }


_SPARK_KEYS = {
    "workspace_url": "spark.databricks.workspaceUrl",
    "workspace_id": "spark.databricks.clusterUsageTags.clusterOwnerOrgId",
    "cluster_id": "spark.databricks.clusterUsageTags.clusterId",
    "cluster_name": "spark.databricks.clusterUsageTags.clusterName",
    "runtime_version": "spark.databricks.clusterUsageTags.sparkVersion",
}


def _spark() -> Mapping[str, Any]:
    if "pyspark.sql" not in sys.modules:
        return {}
    from pyspark.sql import SparkSession

    # The active session is per thread; the instantiated one serves callers on other threads.
    spark = SparkSession.getActiveSession() or getattr(SparkSession, "_instantiatedSession", None)
    if spark is None:
        return {}
    return {name: spark.conf.get(key, None) for name, key in _SPARK_KEYS.items()}


def _environ() -> Mapping[str, Any]:
    env = os.environ
    return {
        "runtime_version": env.get("DATABRICKS_RUNTIME_VERSION"),
        "cluster_id": env.get("DB_CLUSTER_ID"),
        "cluster_name": env.get("DB_CLUSTER_NAME"),
        "workspace_id": env.get("DATABRICKS_WORKSPACE_ID"),
        "workspace_url": env.get("DATABRICKS_HOST") if env.get("DATABRICKS_RUNTIME_VERSION") else None,
    }


JOB_PARAMETERS = {
    "workspace_id": "nats_workspace_id",
    "job_id": "nats_job_id",
    "job_run_id": "nats_job_run_id",
    "task_key": "nats_task_key",
    "env": "nats_env",
}


def _job_parameters() -> Mapping[str, Any]:
    given = job_parameters(JOB_PARAMETERS.values())
    return {f: given.get(p) for f, p in JOB_PARAMETERS.items()}


def _sdk(timeout: float) -> Source:
    def source() -> Mapping[str, Any]:
        from databricks_nats.integrations.databricks.sdk import identity

        found = identity(timeout)
        if found is None:
            return {}
        return {"workspace_id": found.workspace_id, "user": found.user, "workspace_url": found.workspace_url}

    return source


_WORKSPACE_ID = re.compile(r"^(?:https://)?adb-(\d+)\.\d+\.azuredatabricks\.net")


def detect_context(settings: Settings, *, sdk: bool = True) -> DatabricksContext:
    """The context of this process (see the module docstring); never raises."""
    if not settings.detect_context:
        return DatabricksContext()
    explicit = {"workspace_id": settings.workspace if settings.workspace.isdigit() else None}
    sources: list[tuple[str, Source]] = [
        ("settings", lambda: explicit),
        ("repl_context", _repl),
        ("spark_conf", _spark),
        ("environment", _environ),
        ("job_parameters", _job_parameters),
    ]
    values: dict[str, str] = {}
    origin: dict[str, str] = {}

    def take(name: str, source: Source) -> None:
        try:
            found = source()
        except Exception:  # noqa: BLE001 - a missing or broken source only means "unknown here"
            return
        for field in _FIELDS:
            value = found.get(field)
            if field not in values and value not in (None, ""):
                values[field] = str(value)
                origin[field] = name

    for name, source in sources:
        take(name, source)
    on_databricks = "runtime_version" in values or "cluster_id" in values
    if sdk and ("workspace_id" not in values or ("user" not in values and on_databricks)):
        take("sdk", _sdk(settings.context_timeout))
    if "workspace_id" not in values and "workspace_url" in values:
        m = _WORKSPACE_ID.match(values["workspace_url"])
        if m:
            values["workspace_id"], origin["workspace_id"] = m.group(1), "workspace_url"
    if "workspace_url" in values and not values["workspace_url"].startswith("http"):
        values["workspace_url"] = "https://" + values["workspace_url"]
    return DatabricksContext(**values, sources=tuple(sorted(origin.items())))


def apply_context(settings: Settings, context: DatabricksContext) -> Settings:
    """Settings whose subject namespace uses the numeric workspace id (and the job's env) when they are known.

    Explicit settings win: ``workspace`` is replaced only while it is the default ``local``, ``env`` only
    while it is the default ``dev`` and a job parameter names another environment.
    """
    changes: dict[str, Any] = {}
    if settings.workspace == "local" and context.workspace_id and context.workspace_id.isdigit():
        changes["workspace"] = context.workspace_id
    if settings.env == "dev" and context.env and re.fullmatch(r"[A-Za-z0-9_-]+", context.env):
        changes["env"] = context.env
    return dataclasses.replace(settings, **changes) if changes else settings


def as_event_context(context: DatabricksContext, settings: Settings) -> dict[str, Any]:
    """The ``context`` object every event carries: the namespace parts plus whatever is known."""
    out: dict[str, Any] = {"workspace": settings.workspace, "env": settings.env}
    for field in _FIELDS:
        value = getattr(context, field)
        if value is not None and field not in ("env",):
            out[field] = value
    return out
