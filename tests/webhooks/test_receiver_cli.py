"""``databricks-nats webhook-receiver`` as a process: credentials from variables, serves, stops cleanly on SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from databricks_nats.settings import resolve_settings
from databricks_nats.testing import read_stream
from tests.processes import free_port

pytestmark = pytest.mark.slow


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from databricks_nats.cli import main; sys.exit(main())", *args]


def test_the_command_publishes_a_job_notification_and_stops_on_sigterm(nats_server, tmp_path) -> None:
    workspace, port = f"cli{uuid.uuid4().hex[:8]}", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_NATS_", "DATABRICKS_APP_"))}
    env.update(
        DATABRICKS_NATS_URL=nats_server.url,
        DATABRICKS_NATS_WORKSPACE=workspace,
        DATABRICKS_NATS_ENV="test",
        DATABRICKS_NATS_SPOOL_DIR=str(tmp_path / "spool"),
        DATABRICKS_NATS_DETECT_CONTEXT="false",
        DATABRICKS_NATS_WEBHOOK_JOBS_USER="databricks",
        DATABRICKS_NATS_WEBHOOK_JOBS_PASSWORD="pw",
    )
    log = tmp_path / "receiver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(_cli("webhook-receiver", "--port", str(port)), env=env, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:  # noqa: S310 - our own local receiver
                    health = json.loads(r.read())
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert (health["jobs"], health["mlflow"]) == (True, False)  # no MLflow secret: no MLflow route
        body = {"event_type": "jobs.on_success", "workspace_id": "1", "run": {"run_id": 9}, "job": {"job_id": 3}}
        auth = "Basic " + base64.b64encode(b"databricks:pw").decode()
        request = urllib.request.Request(  # noqa: S310 - our own local receiver
            url + "/databricks/jobs", data=json.dumps(body).encode(), method="POST", headers={"Authorization": auth}
        )
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()
    assert json.loads(log.read_text().strip().splitlines()[-1])["published"] == 1
    stream = resolve_settings(environ={}, spark_conf={}, workspace=workspace, env="test").stream_name
    stored = read_stream(nats_server.url, stream)
    assert [m["envelope"]["type"] for m in stored] == ["databricks.databricks.job_run.succeeded"]


def test_the_command_refuses_to_start_with_nothing_to_receive(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_NATS_")}
    done = subprocess.run(_cli("webhook-receiver", "--port", "0"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "DATABRICKS_NATS_WEBHOOK_MLFLOW_SECRET" in done.stderr


def test_credentials_come_from_files_and_variables_never_from_arguments(tmp_path) -> None:
    """A rotation keeps both MLflow secrets; the job password comes from a file; nothing secret is an argument."""
    import argparse

    from databricks_nats.integrations.webhooks.cli import add_parser, config_from

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    (tmp_path / "new").write_text("new-secret\n")
    (tmp_path / "pw").write_text("file-password\n")
    args = parser.parse_args(
        [
            "webhook-receiver",
            "--mlflow-secret-file",
            str(tmp_path / "new"),
            "--jobs-password-file",
            str(tmp_path / "pw"),
        ]
    )
    env = {"DATABRICKS_NATS_WEBHOOK_MLFLOW_SECRET_PREVIOUS": "old-secret", "DATABRICKS_NATS_WEBHOOK_JOBS_USER": "u"}
    config = config_from(args, env)
    assert [s.reveal() for s in config.mlflow_secrets] == ["new-secret", "old-secret"]
    assert (config.jobs_user, config.jobs_password.reveal()) == ("u", "file-password")
    assert "secret" not in repr(config).replace("mlflow_secrets", "")  # masked in every repr
    with pytest.raises(SystemExit):
        parser.parse_args(["webhook-receiver", "--mlflow-secret", "on-the-command-line"])
