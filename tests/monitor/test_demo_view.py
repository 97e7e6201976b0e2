"""`databricks-nats demo`'s live view shows only events: other output goes to a log file named at the end, and
a summary table closes it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
from conftest import CLI, cli_env

from databricks_nats.testing import NatsServer

EVENT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}  [a-z_]+\.[a-z_.]+ +\S+")


def _demo(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "demo", *args], capture_output=True, text=True, timeout=timeout, env=cli_env(**env))


def _event_block(stdout: str) -> list[str]:
    """The lines between 'listening on …' and the blank line before the summary."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("listening on ")) + 2
    end = lines.index("", start)
    return lines[start:end]


def _log_file(stdout: str) -> str:
    match = re.search(r"^Spark and MLflow logs: (\S+)$", stdout, re.MULTILINE)
    assert match, stdout[-2000:]
    return match.group(1)


def test_simulated_demo_shows_only_events_then_a_summary(nats_server: NatsServer) -> None:
    """Every line of the live view is an event; a table of counts per type, acked and latency follows; nothing on
    stderr; the log file is named."""
    done = _demo("--simulate", "--url", nats_server.url, "--workspace", "demoview", "--env", "t")
    assert done.returncode == 0, done.stderr
    block = _event_block(done.stdout)
    assert len(block) == 11, block
    assert all(EVENT_LINE.match(line) for line in block), block
    assert done.stderr == ""
    table = done.stdout.split("\n\n")[-2]
    assert re.search(r"^mlflow\.run\.metrics +5$", table, re.MULTILINE)
    assert re.search(r"^acked by JetStream +11$", table, re.MULTILINE)
    assert re.search(r"^ack latency p99 ms +[0-9.]+$", table, re.MULTILINE)
    assert os.path.isfile(_log_file(done.stdout))


@pytest.mark.slow
def test_real_demo_keeps_spark_and_mlflow_logs_out_of_the_view(tmp_path: Any) -> None:
    """With MLflow and Spark: log4j WARN lines, Python warnings and MLflow's prints land in the log file, not
    between the events; no Spark progress bar."""
    done = _demo(timeout=600, HOME=str(tmp_path), PYSPARK_PYTHON=sys.executable)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    block = _event_block(done.stdout)
    assert block
    assert all(EVENT_LINE.match(line) for line in block), block
    assert "[Stage " not in done.stdout + done.stderr  # Spark's console progress bar
    for kind in ("mlflow.run.started", "mlflow.model.alias_set", "spark.execution."):
        assert kind in "\n".join(block)
    with open(_log_file(done.stdout)) as log:
        logged = log.read()
    assert "WARN" in logged  # Spark's log4j start-up lines are there, not on the terminal
    assert "WARN" not in done.stdout
    assert done.stderr == ""
