"""Exit order (issue 13, item 3): a script that starts a run and never ends it has the run ended by MLflow's own
exit handler; the ``mlflow.run.finished`` that produces is delivered, configured either way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from databricks_nats.settings import resolve_settings
from databricks_nats.testing import NatsServer, read_stream

pytestmark = pytest.mark.slow

LEFT_OPEN = """
import mlflow
mlflow.start_run()
mlflow.log_param("alpha", 0.5)
mlflow.log_metric("loss", 0.25)
# no end_run(): MLflow's exit handler ends the run
"""

CONFIGURED_FIRST = "import databricks_nats\ndatabricks_nats.configure()\n" + LEFT_OPEN


@pytest.mark.parametrize("script", [LEFT_OPEN, CONFIGURED_FIRST], ids=["zero-code", "configure-then-import-mlflow"])
def test_the_run_mlflow_ends_at_exit_is_announced(nats_server: NatsServer, namespace: Any, tmp_path: Path, script):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_"))}
    env.update(
        DATABRICKS_NATS_URL=nats_server.url,
        DATABRICKS_NATS_WORKSPACE=namespace["workspace"],
        DATABRICKS_NATS_ENV=namespace["env"],
        DATABRICKS_NATS_SPOOL_DIR=str(tmp_path / "spool"),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        DATABRICKS_NATS_EXIT_FLUSH_TIMEOUT="60",  # a starved machine may take a while to connect
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stream = resolve_settings(environ={}, spark_conf={}, **namespace).stream_name
    types = [m["envelope"]["type"].removeprefix("databricks.") for m in read_stream(nats_server.url, stream)]
    assert types[0] == "mlflow.run.started"
    assert types[-1] == "mlflow.run.finished"
    assert "mlflow.run.params" in types
    assert "mlflow.run.metrics" in types
