"""NATS credentials from a Databricks secret scope (real WorkspaceClient, stubbed REST), rotation and secrecy.

The secret source is injected (``DatabricksSecrets``, the ``SecretSource`` the client uses by default), pointed
at the stub's ``/api/2.0/secrets/get``; without one, a configured scope or reference is refused at configure.
"""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from databricks_nats.client import Client
from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.databricks import DatabricksSecrets
from databricks_nats.ports import MappingSecrets, NoContext
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.testing import NatsServer
from databricks_nats.transport.auth import (
    auth_options,
    credentials_source,
    require_secret_source,
    resolve_credentials,
)

N = 20


def _settings(url: str, tmp_path: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {"url": url, "spool_dir": str(tmp_path / "spool"), "workspace": f"ws{uuid.uuid4().hex[:8]}"}
    base.update({"secret_scope": "nats", "ack_timeout": 1.0, "credentials_ttl": 0.2})
    return resolve_settings(environ={}, spark_conf={}, **{**base, **kw})


def _client(settings: Settings) -> Client:
    """A client reading the secret scope through the stub, with no context detection (the namespace stays ours)."""
    return Client(settings, context=NoContext(), secrets=DatabricksSecrets())


def _emit(pub: Client, start: int, n: int = N) -> None:
    for i in range(start, start + n):
        pub.emit("mlflow.run.metrics", {"experiment_id": "1", "run_id": "r", "metrics": {"i": i}})


def _server(tmp_path: Path, config: str, server: NatsServer | None = None) -> NatsServer:
    path = tmp_path / "server.conf"
    path.write_text(config)
    if server is None:
        return NatsServer(config=str(path)).start()
    server.stop()
    return server.start()


def test_user_and_password_come_from_the_scope(databricks_stub: Any, tmp_path: Path) -> None:
    """User and password stored in the secret scope (base64 on the wire) authenticate the publisher."""
    databricks_stub.secrets.update({("nats", "nats-user"): "trainer", ("nats", "nats-password"): "scope-pw-1"})
    srv = _server(tmp_path, 'authorization { users = [ {user: trainer, password: "scope-pw-1"} ] }')
    try:
        s = _settings(srv.url, tmp_path)
        pub = _client(s)
        _emit(pub, 0)
        assert pub.flush(30).ok, pub.stats()
        assert pub.stats()["acked"] == N
        pub.close()
    finally:
        srv.close()
    assert "/api/2.0/secrets/get" in databricks_stub.calls
    assert credentials_source(s).startswith("Databricks secret scope 'nats'")


def test_explicit_credentials_beat_the_scope(databricks_stub: Any, tmp_path: Path) -> None:
    """A token given in settings (argument or DATABRICKS_NATS_TOKEN) wins; the scope is not even read."""
    databricks_stub.secrets[("nats", "nats-token")] = "from-scope"
    c = resolve_credentials(_settings("nats://127.0.0.1:1", tmp_path, token="explicit"), DatabricksSecrets())
    assert c.token is not None
    assert c.token.reveal() == "explicit"
    assert "/api/2.0/secrets/get" not in databricks_stub.calls


def test_rotated_secret_is_used_after_server_restart(databricks_stub: Any, tmp_path: Path) -> None:
    """The secret changes in the scope, the server restarts with it: the publisher reconnects and delivers all."""
    databricks_stub.secrets[("nats", "nats-token")] = "scope-token-1"
    srv = _server(tmp_path, 'authorization { token: "scope-token-1" }')
    try:
        s = _settings(srv.url, tmp_path, secret_keys="token=nats-token")
        pub = _client(s)
        _emit(pub, 0)
        assert pub.flush(30).ok
        before = databricks_stub.calls.count("/api/2.0/secrets/get")
        databricks_stub.secrets[("nats", "nats-token")] = "scope-token-2"
        _server(tmp_path, 'authorization { token: "scope-token-2" }', srv)
        _emit(pub, N)
        assert pub.flush(60).ok, pub.stats()
        assert pub.stats()["acked"] == 2 * N
        pub.close()
    finally:
        srv.close()
    assert databricks_stub.calls.count("/api/2.0/secrets/get") > before


def test_scope_errors_name_the_key_never_a_value(databricks_stub: Any, tmp_path: Path) -> None:
    """A scope with none of the keys, or a key we may not read, raises ConfigurationError naming scope and key."""
    s = _settings("nats://127.0.0.1:1", tmp_path, secret_keys="token=nats-token")
    with pytest.raises(ConfigurationError, match="holds none of the keys nats-token"):
        resolve_credentials(s, DatabricksSecrets())
    databricks_stub.forbidden.add(("nats", "nats-token"))
    with pytest.raises(ConfigurationError, match="cannot read key 'nats-token' of scope 'nats': PermissionDenied"):
        resolve_credentials(s, DatabricksSecrets())


def test_secret_values_never_appear_in_logs_reprs_stats_or_errors(
    databricks_stub: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With every logger at DEBUG, a refused old secret, a rotation and a failure, no secret value is ever shown."""
    caplog.set_level(logging.DEBUG)
    secrets = ["wrong-token-4d1f9c", "right-token-8b2e7a"]
    databricks_stub.secrets[("nats", "nats-token")] = secrets[0]
    srv = _server(tmp_path, f'authorization {{ token: "{secrets[1]}" }}')
    shown: list[str] = []
    try:
        s = _settings(srv.url, tmp_path, secret_keys="token=nats-token")
        pub = _client(s)
        _emit(pub, 0)
        assert not pub.flush(3).ok  # the scope holds a token the server refuses
        refused = pub.stats()
        assert refused["errors"]["auth"] >= 1
        databricks_stub.secrets[("nats", "nats-token")] = secrets[1]
        assert pub.flush(60).ok, pub.stats()
        shown += [repr(refused), repr(pub.stats()), repr(s), str(s), repr(resolve_credentials(s, DatabricksSecrets()))]
        pub.close()
    finally:
        srv.close()
    explicit = _settings(srv.url, tmp_path, token=secrets[1], password=secrets[0], user="u")
    shown += [repr(explicit), credentials_source(explicit), repr(resolve_credentials(explicit, DatabricksSecrets()))]
    databricks_stub.forbidden.add(("nats", "nats-token"))
    with pytest.raises(ConfigurationError) as err:
        resolve_credentials(s, DatabricksSecrets())
    shown.append(str(err.value))
    text = caplog.text + "\n".join(shown) + "\n".join(repr(r.__dict__) for r in caplog.records)
    assert "NATS refused the credentials" in caplog.text
    for value in [*secrets, databricks_stub.pat]:
        assert value not in text
        assert base64.b64encode(value.encode()).decode() not in text


def test_the_databricks_secret_source_reads_the_scope_and_tells_a_missing_key(databricks_stub: Any) -> None:
    """DatabricksSecrets.get decodes the stored value; a key that does not exist is None, an unreadable one raises."""
    databricks_stub.secrets[("nats", "nats-token")] = "scope-token-7"
    secrets = DatabricksSecrets()
    assert secrets.get("nats", "nats-token") == "scope-token-7"
    assert secrets.get("nats", "absent") is None
    databricks_stub.forbidden.add(("nats", "nats-token"))
    with pytest.raises(ConfigurationError, match="cannot read key 'nats-token' of scope 'nats'"):
        secrets.get("nats", "nats-token")
    assert "scope-token-7" not in repr(secrets)


def test_a_secret_reference_is_read_through_the_source_it_is_given(databricks_stub: Any, tmp_path: Path) -> None:
    """A ``{{secrets/scope/key}}`` value is read from the injected source: the stub, or any other SecretSource."""
    databricks_stub.secrets[("nats", "nats-token")] = "from-databricks"
    s = _settings("nats://127.0.0.1:1", tmp_path, secret_scope=None, token="{{secrets/nats/nats-token}}")
    assert auth_options(s, secrets=DatabricksSecrets())["token"] == "from-databricks"
    before = len(databricks_stub.calls)
    vault = MappingSecrets({"nats/nats-token": "from-vault"})
    assert auth_options(s, secrets=vault)["token"] == "from-vault"
    assert len(databricks_stub.calls) == before  # the other source never asks Databricks
    with pytest.raises(ConfigurationError, match="key 'nats-token' of scope 'nats' does not exist"):
        resolve_credentials(s, MappingSecrets({}))


def test_without_a_secret_source_a_scope_or_reference_is_refused_at_configure(
    databricks_stub: Any, tmp_path: Path
) -> None:
    """No source given: a scope or a reference raises ConfigurationError naming secret_scope; nothing is read."""
    databricks_stub.secrets[("nats", "nats-token")] = "never-read"
    scoped = _settings("nats://127.0.0.1:1", tmp_path)
    referenced = _settings("nats://127.0.0.1:1", tmp_path, secret_scope=None, token="{{secrets/nats/nats-token}}")
    for s in (scoped, referenced):
        for call in (require_secret_source, resolve_credentials, auth_options):
            with pytest.raises(ConfigurationError, match="no secret source was given") as err:
                call(s, None)
            assert err.value.setting == "secret_scope"
    require_secret_source(scoped, DatabricksSecrets())  # given one: fine
    plain = _settings("nats://127.0.0.1:1", tmp_path, secret_scope=None, token="plain")
    require_secret_source(plain, None)  # nothing to read: no source needed
    assert resolve_credentials(plain).token is not None
    explicit = _settings("nats://127.0.0.1:1", tmp_path, token="explicit")  # explicit credentials beat the scope
    require_secret_source(explicit, None)
    assert "/api/2.0/secrets/get" not in databricks_stub.calls
