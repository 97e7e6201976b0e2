"""Zero-code activation everywhere: every MLflow use in a fresh process, configured by environment variables
(classic clusters) or by a settings file named by a job parameter (serverless, which has no cluster
environment variables), with secrets as ``{{secrets/scope/key}}`` references read from the Databricks REST
API (a loopback stub of its documented endpoints, read by the real databricks-sdk)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from databricks_nats.errors import ConfigurationError
from databricks_nats.settings import explain_settings, resolve_settings
from databricks_nats.testing import NatsServer, read_stream

pytestmark = pytest.mark.slow

REGISTRY_ONLY = """
from mlflow import MlflowClient
client = MlflowClient()
client.create_registered_model("churn")
client.set_registered_model_tag("churn", "team", "ml")
client.delete_registered_model("churn")
"""

TRAINING = """
import mlflow
with mlflow.start_run():
    mlflow.log_param("alpha", 0.5)
"""


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without our, MLflow's and Spark's variables; a starved machine may take a while to
    connect, and the exit flush (not its time bound) is what these tests are about."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_", "SPARK_"))}
    return {**keep, "DATABRICKS_NATS_EXIT_FLUSH_TIMEOUT": "60", **extra}


def _run(script: str, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _types(server: NatsServer, **namespace: str) -> list[str]:
    stream = resolve_settings(environ={}, spark_conf={}, **namespace).stream_name
    return [m["envelope"]["type"].removeprefix("databricks.") for m in read_stream(server.url, stream)]


def test_registry_only_process_publishes_with_env_vars_only(nats_server: NatsServer, namespace: Any, tmp_path: Path):
    """A job that only registers and deletes a model with MlflowClient (no run at all) announces it."""
    env = _clean_env(
        DATABRICKS_NATS_URL=nats_server.url,
        DATABRICKS_NATS_WORKSPACE=namespace["workspace"],
        DATABRICKS_NATS_ENV=namespace["env"],
        DATABRICKS_NATS_SPOOL_DIR=str(tmp_path / "spool"),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    proc = _run(REGISTRY_ONLY, tmp_path / "job", env)
    expected = ["mlflow.model.registered", "mlflow.model.tag_set", "mlflow.model.deleted"]
    assert _types(nats_server, **namespace) == expected, proc.stderr[-3000:]


def _token_server(tmp_path: Path, token: str) -> NatsServer:
    conf = tmp_path / "nats.conf"
    conf.write_text(f'authorization {{ token: "{token}" }}\n')
    return NatsServer(config=str(conf)).start()


def test_serverless_style_settings_file_from_a_job_parameter_with_a_secret_reference(
    databricks_stub: Any, namespace: Any, tmp_path: Path
):
    """No DATABRICKS_NATS_* variable at all (as on serverless): the job parameter ``--nats_config=PATH`` names a
    settings file whose token is a ``{{secrets/...}}`` reference; the run reaches a token-protected NATS, and the
    token is in no output."""
    token = "s3rverless-t0ken-7788"
    databricks_stub.secrets[("nats", "nats-token")] = token
    server = _token_server(tmp_path, token)
    try:
        config = tmp_path / "prod.toml"
        config.write_text(
            f'url = "{server.url}"\nworkspace = "{namespace["workspace"]}"\nenv = "{namespace["env"]}"\n'
            f'token = "{{{{secrets/nats/nats-token}}}}"\nspool_dir = "{tmp_path / "spool"}"\n'
        )
        env = _clean_env(
            DATABRICKS_HOST=databricks_stub.url,
            DATABRICKS_TOKEN=databricks_stub.pat,
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        )
        proc = _run(TRAINING, tmp_path / "task", env, f"--nats_config={config}")
        assert token not in proc.stdout + proc.stderr
        url_with_token = server.url.replace("nats://", f"nats://{token}@")  # the server refuses anonymous readers
        stream = resolve_settings(environ={}, spark_conf={}, **namespace).stream_name
        types = [m["envelope"]["type"].removeprefix("databricks.") for m in read_stream(url_with_token, stream)]
        assert types == ["mlflow.run.started", "mlflow.run.params", "mlflow.run.finished"]
        assert "/api/2.0/secrets/get" in databricks_stub.calls
    finally:
        server.close()


def test_precedence_is_arguments_environment_file_spark_conf_defaults(tmp_path: Path, monkeypatch: Any):
    """explicit > DATABRICKS_NATS_* > settings file > Spark conf > defaults, and each origin is reported."""
    config = tmp_path / "databricks-nats.toml"
    config.write_text('env = "from_file"\nworkspace = "filews"\nsubject_prefix = "file"\nmetrics_interval = 3\n')
    monkeypatch.chdir(tmp_path)  # found at the well-known location ./databricks-nats.toml
    monkeypatch.setattr(sys, "argv", ["task"])
    environ = {"DATABRICKS_NATS_WORKSPACE": "envws", "DATABRICKS_NATS_SUBJECT_PREFIX": "envp"}
    conf = {"subject_prefix": "conf", "metrics_interval": "9", "client_name": "from-conf"}
    settings, origins = explain_settings(environ=environ, spark_conf=conf, subject_prefix="arg")
    assert (settings.subject_prefix, settings.workspace, settings.env) == ("arg", "envws", "from_file")
    assert (settings.metrics_interval, settings.client_name) == (3.0, "from-conf")
    assert origins["subject_prefix"] == "argument"
    assert origins["workspace"] == "environment"
    assert origins["env"] == f"file {config}"
    assert origins["client_name"] == "spark conf"
    assert "url" not in origins  # a default


def test_a_bad_settings_file_fails_at_configure_naming_the_file(tmp_path: Path, monkeypatch: Any):
    """Unknown keys, bad values and a named file that is missing are one clear ConfigurationError each."""
    bad = tmp_path / "bad.toml"
    bad.write_text('urll = "nats://x:4222"\n')
    with pytest.raises(ConfigurationError, match="unknown setting 'urll'"):
        resolve_settings(environ={"DATABRICKS_NATS_CONFIG": str(bad)}, spark_conf={})
    bad.write_text("max_inflight = -3\n")
    with pytest.raises(ConfigurationError, match=r"max_inflight.*file"):
        resolve_settings(environ={"DATABRICKS_NATS_CONFIG": str(bad)}, spark_conf={})
    monkeypatch.setattr(sys, "argv", ["task", f"--nats_config={tmp_path / 'missing.toml'}"])
    with pytest.raises(ConfigurationError, match="does not exist"):
        resolve_settings(environ={}, spark_conf={})


def test_doctor_prints_where_each_setting_came_from_and_never_a_secret(nats_server: NatsServer, tmp_path: Path):
    """doctor lists each non-default setting with its origin (environment, the file), secrets as (secret)."""
    config = tmp_path / "dev.toml"
    config.write_text('env = "doctorenv"\npassword = "hunter2-secret"\nuser = "svc"\n')
    env = _clean_env(DATABRICKS_NATS_URL=nats_server.url, DATABRICKS_NATS_CONFIG=str(config), HOME=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "databricks_nats.cli", "doctor", "--timeout", "5"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    out = proc.stdout
    assert f"url = {nats_server.url} from environment" in out
    assert f"env = doctorenv from file {config}" in out
    assert f"password = (secret) from file {config}" in out
    assert "hunter2-secret" not in out + proc.stderr
    assert "spark.jobs:" in out
    assert "mlflow:" in out


def test_doctor_reads_credentials_from_the_secret_scope(databricks_stub: Any, tmp_path: Path):
    """doctor connects with the token held in the Databricks secret scope (read through the SDK's own
    environment auth, against the REST stub), and never prints it."""
    from tests.databricks.conftest import PAT

    config = tmp_path / "auth.conf"
    config.write_text('authorization { token: "sc0pe-token" }\n')
    databricks_stub.secrets = {("nats", "nats-token"): "sc0pe-token"}
    with NatsServer(config=str(config)) as server:
        env = _clean_env(
            DATABRICKS_NATS_URL=server.url,
            DATABRICKS_NATS_SECRET_SCOPE="nats",
            DATABRICKS_NATS_DETECT_CONTEXT="false",
            DATABRICKS_HOST=databricks_stub.url,
            DATABRICKS_TOKEN=PAT,
            HOME=str(tmp_path),
        )
        proc = subprocess.run(
            [sys.executable, "-m", "databricks_nats.cli", "doctor", "--timeout", "5"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "credentials" in out, out
    assert "secret scope 'nats'" in out, out
    assert "cannot connect" not in out, out
    assert "sc0pe-token" not in out
