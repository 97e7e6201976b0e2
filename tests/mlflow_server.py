"""A real ``mlflow server`` for tests: sqlite backend, local artifact root, on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import free_port

__all__ = ["mlflow_server"]


@contextlib.contextmanager
def mlflow_server(root: Path, **env: str) -> Iterator[str]:
    """Run ``mlflow server`` in ``root`` with these extra environment variables (no ``MLFLOW_*`` or
    ``DATABRICKS_NATS_*`` of the caller's); yield its URL once ``/health`` answers; stop its process group."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_NATS_"))}
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
        "--default-artifact-root", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=root, env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310 - our own local server
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy in 120 s: {log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group: its workers too
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
