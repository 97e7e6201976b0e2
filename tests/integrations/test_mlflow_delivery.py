"""Delivery to a real nats-server: zero-code set-up in a fresh process, and a run made while NATS was down."""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

import databricks_nats
from databricks_nats.integrations import mlflow as nats_mlflow
from databricks_nats.integrations.mlflow.plugin import NatsRunContextProvider
from databricks_nats.settings import resolve_settings
from databricks_nats.testing import NatsServer, read_stream

pytestmark = pytest.mark.slow

TRAINING = 'import mlflow\nwith mlflow.start_run():\n    mlflow.log_metric("x", 1)\n'
INTROSPECT = """
import json, sys
api = sys.modules.get("databricks_nats._api")
hook = sys.modules.get("databricks_nats.integrations.mlflow")
print(json.dumps({
    "plugin_loaded": "databricks_nats.integrations.mlflow.plugin" in sys.modules,
    "nats_imported": "nats" in sys.modules,
    "publisher": api is not None and api._transport is not None,
    "hook_installed": hook is not None and hook.installed(),
}))
"""


def test_entry_point_is_registered_for_mlflow_run_context_providers():
    """The wheel registers NatsRunContextProvider under MLflow's ``mlflow.run_context_provider`` group."""
    eps = importlib.metadata.entry_points(group="mlflow.run_context_provider")
    ours = [ep for ep in eps if ep.name == "databricks_nats"]
    assert len(ours) == 1
    assert ours[0].value == "databricks_nats.integrations.mlflow.plugin:NatsRunContextProvider"
    assert ours[0].load() is NatsRunContextProvider
    provider = NatsRunContextProvider()  # MLflow instantiates it with no arguments during `import mlflow`
    assert provider.tags() == {}


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_NATS_"))}
    return {**clean, **extra}


def _spawn(script: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    cwd.mkdir()
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_zero_code_process_publishes_runs_with_only_env_vars(
    nats_server, namespace, tmp_path, subject_of, assert_valid_event
):
    """A fresh process that only uses mlflow publishes its run to NATS with DATABRICKS_NATS_URL set, nothing without."""
    common = {"DATABRICKS_NATS_WORKSPACE": namespace["workspace"], "DATABRICKS_NATS_ENV": namespace["env"]}
    on_db, off_db = tmp_path / "on.db", tmp_path / "off.db"
    on = _spawn(
        TRAINING,
        tmp_path / "on",
        _env(
            DATABRICKS_NATS_URL=nats_server.url,
            DATABRICKS_NATS_SPOOL_DIR=str(tmp_path / "spool-on"),
            MLFLOW_TRACKING_URI=f"sqlite:///{on_db}",
            **common,
        ),
    )
    off = _spawn(  # the same training, no URL; what it imported is printed after it
        TRAINING + INTROSPECT,
        tmp_path / "off",
        _env(
            DATABRICKS_NATS_SPOOL_DIR=str(tmp_path / "spool-off"), MLFLOW_TRACKING_URI=f"sqlite:///{off_db}", **common
        ),
    )
    _on_out, on_err = on.communicate(timeout=120)
    off_out, off_err = off.communicate(timeout=120)
    assert on.returncode == 0, on_err[-3000:]
    assert off.returncode == 0, off_err[-3000:]

    (run,) = MlflowClient(tracking_uri=f"sqlite:///{on_db}").search_runs(["0"])
    stream = resolve_settings(environ={}, spark_conf={}, **namespace).stream_name
    messages = read_stream(nats_server.url, stream)
    assert [m["envelope"]["type"] for m in messages] == [
        "databricks.mlflow.run.started",
        "databricks.mlflow.run.metrics",
        "databricks.mlflow.run.finished",
    ]
    for m in messages:
        assert_valid_event(m["envelope"])
        action = m["envelope"]["type"].rsplit(".", 1)[1]
        assert m["subject"] == subject_of("run", run.info.experiment_id, run.info.run_id, action)
    assert messages[1]["envelope"]["data"]["metrics"]["x"]["value"] == 1
    assert messages[2]["envelope"]["data"]["status"] == "FINISHED"
    assert messages[2]["envelope"]["data"]["metrics"] == run.data.metrics == {"x": 1.0}

    state = json.loads(off_out.strip().splitlines()[-1])
    assert state == {"plugin_loaded": True, "nats_imported": False, "publisher": False, "hook_installed": False}
    assert not (tmp_path / "spool-off").exists()
    assert "databricks-nats" not in off_err
    (quiet,) = MlflowClient(tracking_uri=f"sqlite:///{off_db}").search_runs(["0"])
    assert quiet.info.status == "FINISHED"
    assert quiet.data.metrics == {"x": 1.0}


IMPORTS = """
import json, sys
import mlflow
from mlflow.tracking.context.registry import _run_context_provider_registry as registry
print(json.dumps({
    "ours": sorted(m for m in sys.modules if m.split(".")[0] == "databricks_nats"),
    "registered": [type(p).__name__ for p in registry if type(p).__module__.startswith("databricks_nats")],
    "nats": "nats" in sys.modules,
}))
"""


def test_loading_the_entry_point_during_import_mlflow_hooks_mlflow_but_imports_no_publisher(tmp_path):
    """`import mlflow` with DATABRICKS_NATS_URL set hooks MLflow's registries at once, but imports none of the
    publisher, NATS, the event model or the hook itself (they come with the first store MLflow hands out)."""
    proc = _spawn(IMPORTS, tmp_path / "imports", _env(DATABRICKS_NATS_URL="nats://127.0.0.1:1"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    state = json.loads(out.strip().splitlines()[-1])
    assert state["registered"] == ["NatsRunContextProvider"]
    assert "databricks_nats.integrations.mlflow._compat" in state["ours"]
    heavy = (
        "databricks_nats._api",
        "databricks_nats.transport",
        "databricks_nats.model.events",
        "databricks_nats.integrations.mlflow.hook",
    )
    assert not [m for m in state["ours"] if m.startswith(heavy)]
    assert state["nats"] is False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_made_while_nats_is_down_is_delivered_once_nats_starts(tracking, tmp_path, namespace, assert_valid_event):
    """With nothing listening, every MLflow call succeeds; once a server starts on that port all events arrive."""
    port = _free_port()
    settings = databricks_nats.configure(
        url=f"nats://127.0.0.1:{port}",
        spool_dir=str(tmp_path / "spool"),
        metrics_mode="every",
        ack_timeout=1.0,
        **namespace,
    )
    nats_mlflow.install()
    with mlflow.start_run() as run:
        mlflow.log_params({"lr": 0.01, "epochs": 20})
        for epoch in range(20):
            mlflow.log_metrics({"loss": 1.0 / (epoch + 1), "acc": epoch / 20}, step=epoch)
        mlflow.set_tag("team", "ml")
        mlflow.log_dict({"epochs": 20}, "summary.json")
    stored = MlflowClient().get_run(run.info.run_id)
    assert stored.info.status == "FINISHED"
    assert len(MlflowClient().get_metric_history(run.info.run_id, "loss")) == 20

    down = databricks_nats.stats()
    assert down["connection"] != "connected"
    assert down["acked"] == 0
    expected = Counter(
        {
            "databricks.mlflow.run.started": 1,
            "databricks.mlflow.run.params": 1,
            "databricks.mlflow.run.metrics": 20,
            "databricks.mlflow.run.tags": 1,
            "databricks.mlflow.run.artifacts": 1,
            "databricks.mlflow.run.finished": 1,
        }
    )
    assert down["emitted"] == sum(expected.values())

    server = NatsServer(port=port)
    try:
        server.start()
        result = databricks_nats.flush(30)
        assert result.ok, databricks_nats.stats()
        messages = read_stream(server.url, settings.stream_name)
    finally:
        databricks_nats.shutdown(timeout=0)
        server.close()
    assert Counter(m["envelope"]["type"] for m in messages) == expected
    assert len({m["envelope"]["id"] for m in messages}) == len(messages)
    assert all(m["envelope"]["data"]["run_id"] == run.info.run_id for m in messages)
    for m in messages:
        assert_valid_event(m["envelope"])
    steps = [
        m["envelope"]["data"]["metrics"]["loss"]["step"] for m in messages if m["envelope"]["type"].endswith("metrics")
    ]
    assert sorted(steps) == list(range(20))
