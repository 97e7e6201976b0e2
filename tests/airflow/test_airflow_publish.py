"""NatsHook / NatsPublishOperator: settings from an Airflow connection of type nats, credentials included."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Connection

import databricks_nats
from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.airflow.hooks import connection_settings
from databricks_nats.testing import NatsServer

HERE = Path(__file__).parent
USER, PASSWORD = "airflow", "pw-5c1e2b"


def test_connection_fields_become_settings() -> None:
    """Servers from host (+ port), user/password from login/password, a lone password is a token, extra is
    settings by name; an unknown extra name is refused without its value in the message."""
    conn = Connection(
        conn_id="n",
        conn_type="nats",
        host="nats-1,nats-2:4223",
        port=4222,
        login="u",
        password="p",
        extra=json.dumps({"workspace": "123", "env": "prod", "creds": "/etc/nats/a.creds"}),
    )
    assert connection_settings(conn) == {
        "url": "nats://nats-1:4222,nats://nats-2:4223",
        "user": "u",
        "password": "p",
        "workspace": "123",
        "env": "prod",
        "creds": "/etc/nats/a.creds",
    }
    token = Connection(conn_id="t", conn_type="nats", host="tls://nats:4222", password="tok")
    assert connection_settings(token) == {"url": "tls://nats:4222", "token": "tok"}
    bad = Connection(conn_id="b", conn_type="nats", host="x", extra=json.dumps({"pasword": "hunter2"}))
    with pytest.raises(ConfigurationError) as error:
        connection_settings(bad)
    assert "pasword" in str(error.value)
    assert "hunter2" not in str(error.value)


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real JetStream server that accepts only USER / PASSWORD."""
    config = tmp_path / "auth.conf"
    config.write_text(f'authorization {{ users = [ {{ user: "{USER}", password: "{PASSWORD}" }} ] }}\n')
    with NatsServer(config=str(config)) as server:
        yield server


def test_publish_operator_delivers_with_the_connection_credentials(
    airflow_home: Path,
    auth_server: NatsServer,
    namespace: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator publishes through the nats connection (password-protected server): the event is in the stream;
    with a wrong password the task fails (not acknowledged)."""
    where: dict[str, Any] = {"url": auth_server.url, **namespace}
    with databricks_nats.Client(**where, user=USER, password=PASSWORD, spool_dir=str(tmp_path / "s")) as admin:
        admin.ensure_stream()
    extra = {**namespace, "spool_dir": str(tmp_path / "spool")}
    for conn_id, password in (("NATS_TEST", PASSWORD), ("NATS_WRONG", "wrong")):
        conn = {"conn_type": "nats", "host": auth_server.url, "login": USER, "password": password, "extra": extra}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", json.dumps(conn))
    path = airflow_home / "dags" / "publish_dags.py"
    shutil.copyfile(HERE / "dags" / "publish_dags.py", path)
    spec = importlib.util.spec_from_file_location("publish_dags", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    run = module.publish_with_nats_test.test()
    assert run.state == "success"
    with databricks_nats.subscribe(
        "myteam.deploy.done", start="all", keys=["churn"], user=USER, password=PASSWORD, **where
    ) as sub:
        event = sub.next(30)
    assert (event.data["model"], event.data["run_id"]) == ("main.ml.churn", run.run_id)
    assert module.publish_with_nats_wrong.test().state == "failed"
