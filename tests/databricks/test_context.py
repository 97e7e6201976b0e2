"""Workspace/run context detection: the runtime's REPL context (faked in sys.modules), environment variables,
job parameters, the SDK (stubbed REST), the order between them, and the ``local`` fallback off Databricks.

The Spark-conf source is tested against a real local session in ``test_context_spark.py``.
"""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from databricks_nats.integrations.databricks import (
    DatabricksContextProvider,
    apply_context,
    as_event_context,
    detect_context,
)
from databricks_nats.integrations.databricks import sdk as dbsdk
from databricks_nats.ports import ContextProvider
from databricks_nats.settings import Settings, resolve_settings

REPL = {
    "workspaceId": "5550001112223334",
    "workspaceUrl": "adb-5550001112223334.4.azuredatabricks.net",
    "clusterId": "0101-123456-repl",
    "notebookPath": "/Repos/ml/churn/train",
    "jobId": "981",
    "jobRunId": "77001",
    "idInJob": "77002",
    "taskKey": "train",
    "userName": "ana@example.com",
}


def _settings(**kw: Any) -> Settings:
    return resolve_settings(environ={}, spark_conf={}, **kw)


@pytest.fixture(autouse=True)
def _off_databricks(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """No Databricks variables, no ~/.databrickscfg, no runtime modules, no dbutils, plain argv, no SDK client."""
    for name in ("DATABRICKS_RUNTIME_VERSION", "DB_CLUSTER_ID", "DB_CLUSTER_NAME", "DATABRICKS_HOST",
                 "DATABRICKS_WORKSPACE_ID", "DATABRICKS_CONFIG_PROFILE", "DATABRICKS_TOKEN"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.delitem(sys.modules, "dbruntime", raising=False)
    monkeypatch.delattr(sys.modules["__main__"], "dbutils", raising=False)
    dbsdk.set_workspace_client(None)
    yield
    dbsdk.set_workspace_client(None)


def _fake_runtime(monkeypatch: pytest.MonkeyPatch, **attrs: Any) -> None:
    pkg = types.ModuleType("dbruntime")
    mod = types.ModuleType("dbruntime.databricks_repl_context")
    mod.get_context = lambda: types.SimpleNamespace(**attrs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dbruntime", pkg)
    monkeypatch.setitem(sys.modules, "dbruntime.databricks_repl_context", mod)
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")


def test_off_databricks_everything_is_unknown_and_the_workspace_stays_local():
    """Without any Databricks source the context is empty, nothing raises and the settings are unchanged."""
    s = _settings()
    ctx = detect_context(s)
    assert ctx.sources == ()
    assert not ctx.on_databricks
    assert apply_context(s, ctx) is s
    assert as_event_context(ctx, s) == {"workspace": "local", "env": "dev"}


def test_repl_context_supplies_workspace_cluster_notebook_job_and_user(monkeypatch):
    """The runtime's REPL context names everything; the numeric workspace id becomes the subject token."""
    _fake_runtime(monkeypatch, **REPL)
    s = _settings()
    ctx = detect_context(s)
    assert (ctx.workspace_id, ctx.cluster_id, ctx.notebook_path) == ("5550001112223334", "0101-123456-repl",
                                                                     "/Repos/ml/churn/train")  # fmt: skip
    assert (ctx.job_id, ctx.job_run_id, ctx.task_run_id, ctx.task_key) == ("981", "77001", "77002", "train")
    assert ctx.user == "ana@example.com"
    assert ctx.workspace_url == "https://adb-5550001112223334.4.azuredatabricks.net"
    assert dict(ctx.sources)["workspace_id"] == "repl_context"
    applied = apply_context(s, ctx)
    assert applied.namespace == "dbx.5550001112223334.dev"
    event = as_event_context(ctx, applied)
    assert event["workspace"] == "5550001112223334"
    assert event["task_key"] == "train"
    assert event["runtime_version"] == "15.4"


def test_explicit_settings_beat_the_runtime_and_env_vars_fill_the_gaps(monkeypatch):
    """An explicit numeric workspace wins over the REPL context; DB_CLUSTER_NAME fills what the REPL lacks."""
    _fake_runtime(monkeypatch, workspaceId="999", clusterId="from-repl")
    monkeypatch.setenv("DB_CLUSTER_ID", "from-env")
    monkeypatch.setenv("DB_CLUSTER_NAME", "ml-shared")
    s = _settings(workspace="1234567890", env="prod")
    ctx = detect_context(s)
    assert (ctx.workspace_id, ctx.cluster_id, ctx.cluster_name) == ("1234567890", "from-repl", "ml-shared")
    assert dict(ctx.sources) == {
        "workspace_id": "settings",
        "cluster_id": "repl_context",
        "cluster_name": "environment",
        "runtime_version": "environment",
    }
    assert apply_context(s, ctx) is s  # explicit workspace and env stay


def test_a_broken_runtime_module_degrades_to_the_next_source(monkeypatch):
    """When the REPL context raises, detection continues with the environment instead of failing."""
    _fake_runtime(monkeypatch)
    sys.modules["dbruntime.databricks_repl_context"].get_context = lambda: 1 / 0  # type: ignore[attr-defined]
    monkeypatch.setenv("DB_CLUSTER_ID", "0101-env")
    ctx = detect_context(_settings())
    assert ctx.cluster_id == "0101-env"
    assert ctx.workspace_id is None


class _Widgets:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, name: str) -> str:
        if name not in self.values:
            raise ValueError(f"InputWidgetNotDefined: {name}")
        return self.values[name]


def test_job_parameters_from_widgets_and_arguments(monkeypatch):
    """Bundle job parameters arrive as widgets or --name=value; unresolved {{...}} references are ignored."""
    dbutils = types.SimpleNamespace(widgets=_Widgets({"nats_job_run_id": "4242", "nats_env": "staging",
                                                      "nats_task_key": "{{task.name}}"}))  # fmt: skip
    monkeypatch.setattr(sys.modules["__main__"], "dbutils", dbutils, raising=False)
    monkeypatch.setattr(sys, "argv", ["task.py", "--nats_workspace_id=3141592653589793", "--nats_job_id=17"])
    s = _settings()
    ctx = detect_context(s)
    assert (ctx.job_run_id, ctx.job_id, ctx.env, ctx.task_key) == ("4242", "17", "staging", None)
    assert dict(ctx.sources)["job_run_id"] == "job_parameters"
    assert apply_context(s, ctx).namespace == "dbx.3141592653589793.staging"
    assert apply_context(_settings(env="prod"), ctx).env == "prod"  # an explicit env is never overridden


def test_sdk_names_workspace_and_user_when_nothing_local_does(databricks_stub):
    """With only the SDK configured, get_workspace_id() (X-Databricks-Org-Id) and current_user.me() are used once."""
    s = _settings(context_timeout=10)
    ctx = detect_context(s)
    assert (ctx.workspace_id, ctx.user) == (databricks_stub.org_id, databricks_stub.user_name)
    assert dict(ctx.sources)["workspace_id"] == "sdk"
    calls = len(databricks_stub.calls)
    assert detect_context(s).workspace_id == databricks_stub.org_id
    assert len(databricks_stub.calls) == calls  # cached for the process


def test_sdk_is_not_consulted_when_detection_is_off(databricks_stub):
    """detect_context=false returns an empty context without any request."""
    before = list(databricks_stub.calls)  # the client's own start-up probe
    assert detect_context(_settings(detect_context=False)).sources == ()
    assert databricks_stub.calls == before


def test_the_context_provider_applies_the_workspace_and_returns_the_event_context(monkeypatch):
    """DatabricksContextProvider (the client's default ContextProvider): the numeric workspace id becomes the
    subject token of the settings it returns, sections kept, and the context names the run."""
    _fake_runtime(monkeypatch, **REPL)
    provider = DatabricksContextProvider()
    assert isinstance(provider, ContextProvider)
    s = _settings(metrics_mode="every")
    settings, context = provider.detect(s)
    assert settings.namespace == "dbx.5550001112223334.dev"
    assert settings.metrics_mode == "every"
    assert context["workspace"] == "5550001112223334"
    assert (context["notebook_path"], context["task_key"]) == ("/Repos/ml/churn/train", "train")
    assert context == as_event_context(detect_context(s), settings)


def test_the_context_provider_detects_nothing_when_detection_is_off(monkeypatch, databricks_stub):
    """detect_context=false: the settings come back unchanged with the plain context, and no source is asked."""
    _fake_runtime(monkeypatch, **REPL)
    before = list(databricks_stub.calls)
    s = _settings(detect_context=False)
    settings, context = DatabricksContextProvider().detect(s)
    assert settings is s
    assert context == {"workspace": "local", "env": "dev"}
    assert databricks_stub.calls == before


def test_importing_the_package_imports_neither_the_sdk_nor_spark():
    """databricks-sdk and pyspark are optional: importing databricks_nats (and this integration) loads neither."""
    code = (
        "import sys, databricks_nats, databricks_nats.integrations.databricks;"
        "print([m for m in sys.modules if m.startswith(('databricks.sdk', 'pyspark'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
