"""Credential rotation without restarting the process, against a real nats-server.

The server is restarted (or reloaded) with new credentials while a publisher is running; the publisher
re-resolves its credentials on the disconnect / authorization error, reconnects and delivers every event,
those emitted during the change included. The Databricks-secret-scope variant is in
``tests/databricks/test_secret_scope.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest

from databricks_nats import _api
from databricks_nats.model.events import new_event
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.testing import NatsServer
from databricks_nats.transport.auth import auth_options

N = 25


class Rotating:
    """A real nats-server whose config file can be rewritten before a restart or a reload."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "server.conf"
        self.server = NatsServer(config=str(self.path))

    def start(self, config: str) -> None:
        self.path.write_text(config)
        self.server.start()

    def restart(self, config: str) -> None:
        self.server.stop()
        self.start(config)

    def reload(self, config: str) -> None:
        self.path.write_text(config)
        assert self.server.proc is not None
        self.server.proc.send_signal(signal.SIGHUP)


@pytest.fixture
def rotating(tmp_path: Path) -> Iterator[Rotating]:
    """A restartable real nats-server on a fixed port and store; closed after the test."""
    r = Rotating(tmp_path)
    yield r
    r.server.close()


def _settings(r: Rotating, tmp_path: Path, **kw: Any) -> Settings:
    base = {"url": r.server.url, "spool_dir": str(tmp_path / "spool"), "workspace": f"ws{uuid.uuid4().hex[:8]}"}
    return resolve_settings(environ={}, spark_conf={}, **{**base, "ack_timeout": 1.0, "credentials_ttl": 0.2, **kw})


def _emit(pub: Any, start: int, n: int = N) -> None:
    for i in range(start, start + n):
        pub.emit(new_event("mlflow.run.metrics", {"experiment_id": "1", "run_id": "r", "metrics": {"i": i}}))


def _stored(settings: Settings) -> int:
    async def run() -> int:
        nc = await nats.connect(list(settings.url), allow_reconnect=False, **auth_options(settings))
        try:
            return int((await nc.jetstream().stream_info(settings.stream_name)).state.messages)
        finally:
            await nc.close()

    return asyncio.run(run())


def test_rotated_token_file_is_used_after_server_restart(rotating, tmp_path):
    """A token file rewritten while the server restarts with the new token: the publisher reconnects, delivers all."""
    token_file = tmp_path / "token"
    token_file.write_text("token-one")
    rotating.start('authorization { token: "token-one" }')
    s = _settings(rotating, tmp_path, token=str(token_file))
    pub = _api.build_transport(s)
    try:
        _emit(pub, 0)
        assert pub.flush(30).ok
        token_file.write_text("token-two")
        rotating.restart('authorization { token: "token-two" }')
        _emit(pub, N)
        assert pub.flush(60).ok, pub.stats()
        assert pub.stats()["acked"] == 2 * N
    finally:
        pub.close()
    assert _stored(s) == 2 * N


def _nkey() -> tuple[bytes, str]:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed, nkeys.from_seed(bytearray(seed)).public_key.decode()


def test_rotated_nkey_seed_builds_a_new_connection(rotating, tmp_path):
    """A new NKey (bound per connection by nats-py) is applied by replacing the connection; nothing is lost."""
    (seed1, pub1), (seed2, pub2) = _nkey(), _nkey()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed1)
    rotating.start(f"authorization {{ users = [ {{nkey: {pub1}}} ] }}")
    s = _settings(rotating, tmp_path, nkey_seed=str(seed_file))
    pub = _api.build_transport(s)
    try:
        _emit(pub, 0)
        assert pub.flush(30).ok
        seed_file.write_bytes(seed2)
        rotating.restart(f"authorization {{ users = [ {{nkey: {pub2}}} ] }}")
        _emit(pub, N)
        assert pub.flush(60).ok, pub.stats()
        stats = pub.stats()
        assert stats["acked"] == 2 * N
        assert stats["connects"] >= 2  # a connection of our own, not a nats-py reconnect
    finally:
        pub.close()
    assert _stored(s) == 2 * N


def test_revoked_user_reconnects_with_the_new_password(rotating, tmp_path):
    """The server reloads without the old password (closing our connection); the new one from the file is used."""
    pw = tmp_path / "password"
    pw.write_text("pw-one")
    rotating.start('authorization { users = [ {user: trainer, password: "pw-one"} ] }')
    s = _settings(rotating, tmp_path, user="trainer", password=str(pw))
    pub = _api.build_transport(s)
    try:
        _emit(pub, 0)
        assert pub.flush(30).ok
        pw.write_text("pw-two")
        rotating.reload('authorization { users = [ {user: trainer, password: "pw-two"} ] }')
        _emit(pub, N)
        assert pub.flush(60).ok, pub.stats()
        assert pub.stats()["acked"] == 2 * N
    finally:
        pub.close()
    assert _stored(s) == 2 * N
