"""Helpers of the monitor tests: the CLI as a subprocess, heartbeats as the publishers send them, validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from databricks_nats.testing import NatsServer

CLI = [sys.executable, "-m", "databricks_nats.cli"]


def cli_env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_NATS_", "MLFLOW_"))}
    return {**clean, "DATABRICKS_NATS_EXIT_FLUSH_TIMEOUT": "60", **extra}


def health(publisher_id: str, interval_s: float = 30.0, **fields: Any) -> dict[str, Any]:
    """A ``system.publisher.health`` payload, exactly per its schema."""
    return {
        "publisher_id": publisher_id,
        "stats": {"acked": 7, "dropped_total": 0, "connection": "connected"},
        "compute": {"kind": "local"},
        "versions": {"databricks_nats": "test", "python": sys.version.split()[0]},
        "interval_s": interval_s,
        "state": "connected",
        "queue_depth": 0,
        "spool_bytes": 0,
        "oldest_unacked_age_s": None,
        **fields,
    }


@pytest.fixture
def monitor(nats_server: NatsServer, namespace: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``monitor(*args)``: ``databricks-nats monitor`` on this test's namespace, run to completion."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        ns = ["--url", nats_server.url, "--workspace", namespace["workspace"], "--env", namespace["env"]]
        return subprocess.run(
            [*CLI, "monitor", *ns, *args], capture_output=True, text=True, timeout=timeout, env=cli_env()
        )

    return run


@pytest.fixture
def monitor_json(monitor: Callable[..., subprocess.CompletedProcess[str]]) -> Callable[..., tuple[int, dict[str, Any]]]:
    """``monitor_json(*args)``: exit code and the one JSON document of ``monitor --json --once``."""

    def run(*args: str) -> tuple[int, dict[str, Any]]:
        done = monitor("--json", "--once", *args)
        assert done.returncode in (0, 1), done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 1, done.stdout
        return done.returncode, json.loads(lines[0])

    return run
