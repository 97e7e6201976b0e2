"""``databricks-nats doctor`` run as a subprocess against real nats-servers: healthy, unreachable, no JetStream,
no publish permission, and a stream whose retention differs from the settings."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import databricks_nats
from databricks_nats.testing import NatsServer


def _doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_NATS_", "DATABRICKS_"))}
    return subprocess.run(
        [sys.executable, "-m", "databricks_nats.cli", "doctor", "--timeout", "5", *args],
        capture_output=True,
        text=True,
        env={**clean, "HOME": env.pop("HOME", clean.get("HOME", "")), **env},
        timeout=120,
        check=False,
    )


def _ws() -> str:
    return f"ws{uuid.uuid4().hex[:8]}"


def _server(tmp_path: Path, config: str, **kw: Any) -> NatsServer:
    path = tmp_path / "server.conf"
    path.write_text(config)
    return NatsServer(config=str(path), **kw).start()


def test_healthy_setup_passes_every_check_and_never_prints_the_secret(tmp_path):
    """Against a token-protected JetStream server with the stream in place, every check is ok and exit is 0."""
    srv = _server(tmp_path, 'authorization { token: "doctor-t0ken-77" }')
    try:
        ws = _ws()
        databricks_nats.ensure_stream(url=srv.url, workspace=ws, env="prod", token="doctor-t0ken-77")
        r = _doctor("--url", srv.url, "--workspace", ws, "--env", "prod", DATABRICKS_NATS_TOKEN="doctor-t0ken-77")
        again = _doctor("--url", srv.url, "--workspace", ws, "--env", "prod", DATABRICKS_NATS_TOKEN="doctor-t0ken-77")
    finally:
        srv.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""
    out = r.stdout
    assert "ok       credentials  token from settings" in out
    assert "round trip" in out
    assert "nats-server 2." in out
    assert "ok       jetstream    available" in out
    assert f"DBX_{ws}_prod on dbx.{ws}.prod.>" in out
    assert f"may publish to dbx.{ws}.prod.>" in out
    assert "doctor-t0ken-77" not in out
    assert ", 0 messages" in again.stdout  # the permission probe is never stored


def test_unreachable_server_is_one_problem_line_and_exit_1(tmp_path):
    """Nothing listening: a single problem line naming the (redacted) URL, exit status 1."""
    srv = NatsServer().start()
    url = f"nats://user:pa55word@127.0.0.1:{srv.port}"
    srv.close()  # the port is now closed
    r = _doctor("--url", url)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("databricks-nats doctor: cannot connect to nats://****@127.0.0.1:")
    assert "pa55word" not in r.stdout + r.stderr


def test_server_without_jetstream_is_reported(tmp_path):
    """A server without JetStream fails the JetStream check; connectivity and permission still pass."""
    with NatsServer(jetstream=False) as srv:
        r = _doctor("--url", srv.url, "--workspace", _ws())
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "databricks-nats doctor: JetStream is not available on the server or for this account (ServiceUnavailableError)"
    ]
    assert "ok       connection" in r.stdout


def test_missing_publish_permission_and_differing_retention_are_problems(tmp_path):
    """A user limited to dev checking prod, on a stream with another max age: one line per problem, exit 1."""
    ws = _ws()
    srv = _server(
        tmp_path,
        "authorization { users = [\n"
        '  {user: admin, password: "admin-pw"}\n'
        f'  {{user: trainer, password: "trainer-pw", permissions: {{'
        f'publish: {{allow: ["dbx.{ws}.dev.>", "$JS.API.>"]}}, subscribe: {{allow: ["_INBOX.>"]}}}}}}\n'
        "] }",
    )
    try:
        admin = {"url": srv.url, "workspace": ws, "env": "prod", "user": "admin", "password": "admin-pw"}
        databricks_nats.ensure_stream(**admin, stream_max_age=3600)
        r = _doctor(
            "--url", srv.url, "--workspace", ws, "--env", "prod",
            DATABRICKS_NATS_USER="trainer", DATABRICKS_NATS_PASSWORD="trainer-pw",
        )  # fmt: skip
    finally:
        srv.close()
    assert r.returncode == 1
    problems = r.stderr.strip().splitlines()
    assert len(problems) == 2, r.stdout + r.stderr
    assert problems[0].startswith(f"databricks-nats doctor: stream DBX_{ws}_prod: max_age is 3600")
    assert problems[1].startswith(f"databricks-nats doctor: no permission to publish to dbx.{ws}.prod.>")
    assert "trainer-pw" not in r.stdout + r.stderr
