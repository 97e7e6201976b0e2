"""Every NATS auth mode against a real nats-server started with a config file for it.

Token, user/password, NKey seed, operator mode with a user JWT + seed (``.creds``, JWTs built here with
the ``nkeys`` library: the ``nsc`` tool is not installed), TLS with a CA generated here and client
certificates (mutual TLS, combined with a token), and a user whose publish permission stops at the
``dev`` namespace. Each test delivers events through the real publisher and reads them back.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest

from databricks_nats import _api
from databricks_nats.client import Client
from databricks_nats.model.events import new_event
from databricks_nats.ports import MappingSecrets, NoContext, SecretSource
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.testing import NatsServer
from databricks_nats.transport.auth import auth_options

N = 20


def _settings(url: str, tmp_path: Path, **kw: Any) -> Settings:
    base = {"url": url, "spool_dir": str(tmp_path / "spool"), "workspace": f"ws{uuid.uuid4().hex[:8]}", "env": "dev"}
    return resolve_settings(environ={}, spark_conf={}, **{**base, "ack_timeout": 1.0, **kw})


def _deliver(settings: Settings, n: int = N, ok: bool = True) -> dict[str, Any]:
    """Publish n events through the real publisher; return its stats after a flush that says ``ok``."""
    pub = _api.build_transport(settings)
    try:
        for i in range(n):
            pub.emit(new_event("mlflow.run.metrics", {"experiment_id": "1", "run_id": "r", "metrics": {"i": i}}))
        result = pub.flush(30)
        assert result.ok is ok, pub.stats()
        assert result.pending == 0, pub.stats()
        return pub.stats()
    finally:
        pub.close()


def _stored(settings: Settings, secrets: SecretSource | None = None) -> int:
    async def run() -> int:
        nc = await nats.connect(list(settings.url), allow_reconnect=False, **auth_options(settings, secrets))
        try:
            return int((await nc.jetstream().stream_info(settings.stream_name)).state.messages)
        finally:
            await nc.close()

    return asyncio.run(run())


@pytest.fixture
def server_with(tmp_path: Path) -> Iterator[Callable[[str], NatsServer]]:
    """Start a real nats-server with the given config text (JetStream on); stopped after the test."""
    started: list[NatsServer] = []

    def start(config: str) -> NatsServer:
        path = tmp_path / f"server{len(started)}.conf"
        path.write_text(config)
        srv = NatsServer(config=str(path)).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.close()


def test_token(server_with, tmp_path):
    """A token-protected server accepts the configured token and stores every event."""
    srv = server_with('authorization { token: "t0ken-abc" }')
    s = _settings(srv.url, tmp_path, token="t0ken-abc")
    assert _deliver(s)["acked"] == N
    assert _stored(s) == N


def test_secret_references_are_read_through_the_injected_secret_source(server_with, tmp_path):
    """A ``{{secrets/<scope>/<key>}}`` password is read from the client's SecretSource (here a vault mapping, no
    Databricks): the publisher authenticates with it, and so does a one-off connection given the same source."""
    srv = server_with('authorization { users = [ {user: trainer, password: "vault-pw-42"} ] }')
    s = _settings(srv.url, tmp_path, user="trainer", password="{{secrets/vault/nats-password}}")
    vault = MappingSecrets({("vault", "nats-password"): "vault-pw-42"})
    with Client(s, context=NoContext(), secrets=vault) as client:
        for i in range(N):
            client.emit("mlflow.run.metrics", {"experiment_id": "1", "run_id": "r", "metrics": {"i": i}})
        assert client.flush(30).ok, client.stats()
        assert client.stats()["acked"] == N
    assert _stored(s, vault) == N


def test_user_password_from_file(server_with, tmp_path):
    """User and password (the password read from a file path) authenticate and deliver."""
    srv = server_with('authorization { users = [ {user: trainer, password: "pw-123"} ] }')
    (tmp_path / "pw").write_text("pw-123\n")
    s = _settings(srv.url, tmp_path, user="trainer", password=str(tmp_path / "pw"))
    assert _deliver(s)["acked"] == N
    assert _stored(s) == N


def test_nkey_seed_file(server_with, tmp_path):
    """An NKey seed given as a file path signs the server's nonce and delivers."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    (tmp_path / "user.nk").write_bytes(seed)
    srv = server_with(f"authorization {{ users = [ {{nkey: {public}}} ] }}")
    s = _settings(srv.url, tmp_path, nkey_seed=str(tmp_path / "user.nk"))
    assert _deliver(s)["acked"] == N
    assert _stored(s) == N


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _key(prefix: int) -> tuple[bytes, Any]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed, nkeys.from_seed(bytearray(seed))


def _jwt(claims: dict[str, Any], issuer: Any, subject: str, name: str) -> str:
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public_key.decode(), "name": name, "sub": subject}
    body["nats"] = {**claims, "version": 2}
    body["jti"] = base64.b32encode(hashlib.sha256(json.dumps(body).encode()).digest()).decode().rstrip("=")
    payload = _b64(json.dumps(body).encode())
    return f"{head}.{payload}.{_b64(issuer.sign(f'{head}.{payload}'.encode()))}"


def operator_setup() -> tuple[str, str]:
    """A server config in operator mode (operator, system and JetStream account) and a user's .creds text."""
    _, op = _key(nkeys.PREFIX_BYTE_OPERATOR)
    _, acc = _key(nkeys.PREFIX_BYTE_ACCOUNT)
    _, sys_acc = _key(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, user = _key(nkeys.PREFIX_BYTE_USER)
    pub = {k.public_key.decode(): k for k in (op, acc, sys_acc)}
    op_pub, acc_pub, sys_pub = list(pub)
    limits = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1}
    js = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    config = f"""
operator: {_jwt({"type": "operator", "system_account": sys_pub}, op, op_pub, "op")}
system_account: {sys_pub}
resolver: MEMORY
resolver_preload: {{
  {acc_pub}: {_jwt({"type": "account", "limits": {**limits, **js}}, op, acc_pub, "ml")}
  {sys_pub}: {_jwt({"type": "account", "limits": limits}, op, sys_pub, "SYS")}
}}
"""
    user_jwt = _jwt({"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}, acc,
                    user.public_key.decode(), "trainer")  # fmt: skip
    creds = (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n------END USER NKEY SEED------\n"
    )
    return config, creds


def test_operator_mode_user_jwt_creds(server_with, tmp_path):
    """In operator mode a user JWT + seed given as .creds content authenticates (JetStream account) and delivers."""
    config, creds = operator_setup()
    srv = server_with(config)
    s = _settings(srv.url, tmp_path, creds=creds)
    assert _deliver(s)["acked"] == N
    assert _stored(s) == N


def make_pki(d: Path) -> dict[str, str]:
    """A test CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def cert(cn: str, issuer: Any, key: Any, signer: Any, ca: bool, ext: list[Any]) -> Any:
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        for e in ext:
            b = b.add_extension(e, critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("databricks-nats test CA", None, ca_key, ca_key, True, [])
    out: dict[str, str] = {}

    def write(name: str, obj: Any) -> None:
        path = d / f"{name}.pem"
        if hasattr(obj, "private_bytes"):
            path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))  # fmt: skip
        else:
            path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        out[name] = str(path)

    write("ca", ca)
    for name, usage, san in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("trainer")]),
    ):  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        ext = [x509.ExtendedKeyUsage([usage]), x509.SubjectAlternativeName(san)]
        write(name, cert(name, ca.subject, key, ca_key, False, ext))
        write(f"{name}-key", key)
    return out


def test_mutual_tls_with_custom_ca_and_token(server_with, tmp_path):
    """TLS verified against a generated CA, a client certificate (key given as PEM content) and a token together."""
    pki = make_pki(tmp_path)
    srv = server_with(
        f'tls {{ cert_file: "{pki["server"]}", key_file: "{pki["server-key"]}", ca_file: "{pki["ca"]}", verify: true }}'
        '\nauthorization { token: "tls-t0ken" }'
    )
    url = f"tls://127.0.0.1:{srv.port}"
    key_pem = Path(pki["client-key"]).read_text()
    s = _settings(url, tmp_path, tls_ca=pki["ca"], tls_cert=pki["client"], tls_key=key_pem, token="tls-t0ken")
    assert _deliver(s)["acked"] == N
    assert _stored(s) == N
    no_client_cert = _settings(url, tmp_path, tls_ca=pki["ca"], token="tls-t0ken")
    with pytest.raises(Exception):  # noqa: B017, PT011 - the server requires a client certificate
        _stored(no_client_cert)


def test_publish_outside_permitted_namespace_is_refused_reported_and_never_raises(server_with, tmp_path, caplog):
    """A user allowed to publish only to {prefix}.{ws}.dev.> delivers to dev; prod is refused, logged, counted."""
    ws = f"ws{uuid.uuid4().hex[:8]}"
    srv = server_with(
        "authorization { users = [\n"
        '  {user: admin, password: "admin-pw"}\n'
        f'  {{user: trainer, password: "trainer-pw", permissions: {{publish: {{allow: ["dbx.{ws}.dev.>"]}},'
        ' subscribe: {allow: ["_INBOX.>"]}}}\n'
        "] }"
    )
    for env in ("dev", "prod"):
        _api.ensure_stream(**{"url": srv.url, "workspace": ws, "env": env, "user": "admin", "password": "admin-pw"})
    trainer = {"workspace": ws, "user": "trainer", "password": "trainer-pw", "auto_create_stream": False}
    dev = _settings(srv.url, tmp_path, **trainer, env="dev")
    assert _deliver(dev)["acked"] == N
    caplog.set_level(logging.ERROR, logger="databricks_nats")
    prod = _settings(srv.url, tmp_path, **trainer, env="prod")
    stats = _deliver(prod, ok=False)  # nothing raised into the caller; flush says not everything was acked
    assert stats["acked"] == 0
    assert stats["dropped"]["permission_denied"] == N
    assert stats["errors"]["permission_denied"] >= 1
    assert f"dbx.{ws}.prod" in (stats["last_error"] or "")
    assert any("refused publish" in r.getMessage() and f"dbx.{ws}.prod." in r.getMessage() for r in caplog.records)
    admin = _settings(srv.url, tmp_path, workspace=ws, user="admin", password="admin-pw")
    assert _stored(dataclasses.replace(admin, env="prod")) == 0
    assert _stored(dataclasses.replace(admin, env="dev")) == N
