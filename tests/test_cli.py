"""The ``databricks-nats`` command as a subprocess against real servers: demo, tail, schema, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

import databricks_nats
from databricks_nats.testing import NatsServer

CLI = [sys.executable, "-m", "databricks_nats.cli"]


def _run(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_NATS_", "MLFLOW_"))}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**clean, **env})


def test_demo_simulated_shows_every_event_live(nats_server: NatsServer, tmp_path: Any) -> None:
    """`demo --simulate` publishes a run's events and receives every one of them live (exit 0)."""
    done = _run("demo", "--simulate", "--url", nats_server.url, "--workspace", "cli1", "--env", "demo")
    assert done.returncode == 0, done.stderr
    assert "mlflow.model.alias_set" in done.stdout
    assert "11 events emitted, 11 acked" in done.stdout
    assert "11 received live" in done.stdout


@pytest.mark.slow
def test_demo_trains_a_model_with_mlflow_and_spark(tmp_path: Any) -> None:
    """The README's main job: `demo` on an embedded server trains a model and runs a Spark job, all events live."""
    done = _run("demo", timeout=600, HOME=str(tmp_path), PYSPARK_PYTHON=sys.executable)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for kind in ("mlflow.run.started", "mlflow.run.finished", "mlflow.model.alias_set", "spark.execution."):
        assert kind in done.stdout


def test_tail_from_the_start_of_the_stream(nats_server: NatsServer, namespace: dict[str, str], tmp_path: Any) -> None:
    """`tail --type T --since all --count N` prints the stored events of that type, as JSON with --json."""
    databricks_nats.configure(url=nats_server.url, spool_dir=str(tmp_path / "spool"), **namespace)
    for v in ("1", "2"):
        databricks_nats.emit("mlflow.model.alias_set", {"name": "m", "alias": "champion", "version": v})
    databricks_nats.emit("mlflow.model.registered", {"name": "other"})
    assert databricks_nats.flush(timeout=10).ok
    ns = ["--url", nats_server.url, "--workspace", namespace["workspace"], "--env", namespace["env"]]
    done = _run("tail", "--type", "mlflow.model.alias_set", "--since", "all", "--count", "2", "--json", *ns)
    assert done.returncode == 0, done.stderr
    envelopes = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["data"]["version"] for e in envelopes] == ["1", "2"]
    readable = _run("tail", "--since", "all", "--count", "3", *ns)
    assert "name=other" in readable.stdout


def test_tail_unreachable_server_is_one_line_and_exit_1() -> None:
    """An unreachable server gives one clear line on stderr and exit code 1, not a traceback."""
    done = _run("tail", "--url", "nats://127.0.0.1:1", "--count", "1", timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "cannot tail" in done.stderr


def test_bad_arguments_and_help() -> None:
    """Unknown commands and bad values exit 2 with usage; --help works for every command."""
    assert _run("frobnicate").returncode == 2
    for command in ("demo", "tail", "streams", "doctor", "schema"):
        shown = _run(command, "--help")
        assert shown.returncode == 0
        assert "usage:" in shown.stdout


def test_schema_prints_valid_json_schemas() -> None:
    """`schema TYPE` prints that type's JSON Schema; an unknown type is a one-line error."""
    done = _run("schema", "spark.execution.succeeded")
    assert json.loads(done.stdout)["title"] == "spark.execution.succeeded"
    assert _run("schema", "no.such.type.here").returncode != 0
