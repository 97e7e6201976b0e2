"""configure() applies the detected Databricks context: numeric workspace namespace, context on every event."""

from __future__ import annotations

from pathlib import Path

import pytest

import databricks_nats
from databricks_nats.testing import NatsServer, read_stream


def test_detected_context_names_the_namespace_and_travels_in_events(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On a cluster (runtime variables set) events go to the numeric workspace's subjects and carry the cluster."""
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    monkeypatch.setenv("DB_CLUSTER_ID", "1121-170000-abcd1234")
    monkeypatch.setenv("DATABRICKS_WORKSPACE_ID", "4242424242")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.databrickscfg: the SDK source stays silent
    settings = databricks_nats.configure(url=nats_server.url, env="ctxtest", spool_dir=str(tmp_path / "spool"))
    assert settings.workspace == "4242424242"
    assert settings.namespace == "dbx.4242424242.ctxtest"
    databricks_nats.emit("data.table.updated", {"table": "main.f.t"})
    assert databricks_nats.flush(timeout=10).ok
    [stored] = read_stream(nats_server.url, settings.stream_name)
    assert stored["subject"].startswith("dbx.4242424242.ctxtest.data.table.")
    context = stored["envelope"]["data"]["context"]
    assert context["cluster_id"] == "1121-170000-abcd1234"
    assert context["workspace"] == "4242424242"


def test_explicit_workspace_wins_and_detection_can_be_switched_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An explicit workspace is never replaced, and detect_context=false leaves only the namespace parts."""
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    monkeypatch.setenv("DATABRICKS_WORKSPACE_ID", "4242424242")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert databricks_nats.configure(workspace="team-a", disabled=True).workspace == "team-a"
    assert databricks_nats.configure(detect_context=False, disabled=True).workspace == "local"
