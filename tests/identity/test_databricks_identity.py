"""``oidc_token = "databricks"`` end to end: a bundle job running as a service principal publishes as itself.

The real databricks-sdk does OAuth M2M (``DATABRICKS_HOST``, ``DATABRICKS_CLIENT_ID``,
``DATABRICKS_CLIENT_SECRET``) against a loopback workspace (``databricks_oauth_stub``), which is also the OIDC
issuer (``{host}/oidc``) our auth-callout service trusts; a real nats-server delegates to the service
(encrypted callout), and the policy grants the service principal's application id publish rights in ws1/dev.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from databricks_nats.client import Client
from databricks_nats.integrations.databricks import sdk
from databricks_nats.integrations.identity import natsjwt, xkey
from databricks_nats.integrations.identity.config import ServiceConfig
from databricks_nats.integrations.identity.oidc import OidcIssuer
from databricks_nats.integrations.identity.service import AuthService
from databricks_nats.ports import NoContext
from databricks_nats.settings import resolve_settings
from databricks_nats.testing import NatsServer, read_stream
from databricks_nats.values import Secret
from tests.identity.callout_server import callout_config
from tests.identity.databricks_oauth_stub import DatabricksOAuthStub

pytestmark = pytest.mark.slow

N = 20
CLIENT_ID = "5f0c3a8e-1b2d-4c6e-9a7f-2d4b6c8e0a13"  # a service principal's application id
CLIENT_SECRET = "dose-stub-sp-secret-7f3a9c1e5b"

POLICY = f"""
prefix = "dbx"
max_ttl = "1h"

[[rules]]
name = "bundle-job-sp"
when = {{ kind = "oidc", subject = "{CLIENT_ID}" }}
workspace = "ws1"
env = "dev"
publish = ["{{prefix}}.{{workspace}}.{{env}}.mlflow.>"]
jetstream = "publisher"
"""


@dataclass
class DbxStack:
    server: NatsServer
    workspace: DatabricksOAuthStub
    service: AuthService
    tmp: Path
    admin_url: str


@pytest.fixture(scope="module")
def dbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbxStack]:
    tmp = tmp_path_factory.mktemp("dbx-callout")
    issuer_seed, issuer_public = natsjwt.new_account_key()
    xkey_seed, xkey_public = xkey.new_xkey()
    config = callout_config(
        tmp / "server.conf",
        issuer_public=issuer_public,
        auth_user="auth",
        auth_password="auth-pw",
        xkey_public=xkey_public,
        extra_users=[
            {"user": "audit", "password": "audit-pw", "account": "APP"},
            {"user": "admin", "password": "admin-pw", "account": "APP"},
        ],
    )
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    with NatsServer(config=config) as server, DatabricksOAuthStub({CLIENT_ID: CLIENT_SECRET}) as workspace:
        admin_url = server.url.replace("nats://", "nats://admin:admin-pw@")
        service_config = ServiceConfig(
            nats=resolve_settings(environ={}, spark_conf={}, url=server.url, user="auth", password="auth-pw"),
            account="APP",
            issuer_seed=Secret(issuer_seed),
            xkey_seed=Secret(xkey_seed),
            policy=str(policy),
            # The workspace's issuer; its tokens' audience is the client id (see databricks_oauth_stub).
            oidc=(OidcIssuer(issuer=workspace.issuer, audiences=(CLIENT_ID,)),),
            audit=resolve_settings(
                environ={},
                spark_conf={},
                url=admin_url.replace("admin:admin-pw", "audit:audit-pw"),
                workspace="platform",
                env="prod",
                spool_dir=str(tmp / "audit-spool"),
            ),
        )
        service = AuthService(service_config)
        with service.running():
            yield DbxStack(server, workspace, service, tmp, admin_url)


@pytest.fixture
def sp_env(dbx: DbxStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The environment of a job running as the service principal, and nothing else the SDK could pick up."""
    import os

    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "ARM_", "AZURE_", "GOOGLE_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # no ~/.databrickscfg
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(home / "absent.cfg"))
    monkeypatch.setenv("DATABRICKS_HOST", dbx.workspace.host)
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET)
    sdk.set_workspace_client(None)  # one WorkspaceClient per process: built from this environment
    try:
        yield
    finally:
        sdk.set_workspace_client(None)


@pytest.fixture(autouse=True)
def _all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level(logging.DEBUG):
        yield


def _stream(dbx: DbxStack) -> str:
    settings = resolve_settings(
        environ={}, spark_conf={}, url=dbx.admin_url, workspace="ws1", env="dev",
        spool_dir=str(dbx.tmp / f"admin-{uuid.uuid4().hex[:6]}"), auto_create_stream=False,
    )  # fmt: skip
    admin = Client(settings, context=NoContext())
    try:
        return admin.ensure_stream().name
    finally:
        admin.close()


def _client(dbx: DbxStack, spool_dir: Path) -> Client:
    return Client(
        url=dbx.server.url,
        oidc_token="databricks",
        workspace="ws1",
        env="dev",
        spool_dir=str(spool_dir),
        auto_create_stream=False,
        ack_timeout=2.0,
        context=NoContext(),
    )


def _emit(client: Client, n: int = N) -> list[str]:
    ids = []
    for i in range(n):
        event = client.emit("mlflow.run.metrics", {"experiment_id": "1", "run_id": "r", "metrics": {"i": i}})
        assert event is not None
        ids.append(event.id)
    return ids


def _assert_no_token_material(dbx: DbxStack, *haystacks: str) -> None:
    assert dbx.workspace.tokens, "no token was minted: nothing was checked"
    for token in dbx.workspace.tokens:
        for part in (token, token.rsplit(".", 1)[-1]):
            assert all(part not in h for h in haystacks), "token material leaked"
    assert all(CLIENT_SECRET not in h for h in haystacks), "the client secret leaked"


def _new_ids(dbx: DbxStack, stream: str, ids: list[str]) -> list[str]:
    wanted = set(ids)
    return [m["envelope"]["id"] for m in read_stream(dbx.admin_url, stream) if m["envelope"]["id"] in wanted]


def test_a_service_principal_publishes_with_its_databricks_oauth_token(
    dbx: DbxStack, sp_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stream = _stream(dbx)
    issued, granted = dbx.workspace.tokens_issued, dbx.service.stats()["granted"]
    client = _client(dbx, tmp_path / "spool")
    try:
        ids = _emit(client)
        result = client.flush(30)
        stats = client.stats()
    finally:
        client.close()
    assert result.ok, (stats, dbx.service.stats(), dbx.workspace.paths)
    assert stats["acked"] == N
    assert sorted(_new_ids(dbx, stream, ids)) == sorted(ids)  # every event, once, in ws1/dev
    # The SDK went through the workspace's OAuth M2M endpoints and got one token, which the service accepted.
    assert "GET /oidc/.well-known/oauth-authorization-server" in dbx.workspace.paths
    assert dbx.workspace.tokens_issued == issued + 1
    assert dbx.service.stats()["granted"] > granted
    # The audit names the service principal as the workspace issuer's subject, and the rule that matched.
    assert dbx.service.audit_client.flush(30).ok
    audit = [m["envelope"] for m in read_stream(dbx.admin_url, dbx.service.audit_client.settings.stream_name)]
    grants = [e["data"] for e in audit if e["type"].endswith("system.auth.granted")]
    assert grants[-1]["identity"] == f"oidc:{dbx.workspace.issuer}#{CLIENT_ID}"
    assert grants[-1]["rule"] == "bundle-job-sp"
    events = json.dumps(read_stream(dbx.admin_url, stream))
    _assert_no_token_material(dbx, caplog.text, events, json.dumps(audit), dbx.server.log_text())


def test_a_wrong_client_secret_is_refused_counted_and_events_stay_spooled(
    dbx: DbxStack, sp_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stream = _stream(dbx)
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", "not-the-secret")
    refusals, issued = dbx.workspace.token_refusals, dbx.workspace.tokens_issued
    no_token = dbx.service.stats()["denied_by_reason"].get("no token presented", 0)
    spool = tmp_path / "spool"
    client = _client(dbx, spool)
    try:
        ids = _emit(client)  # never raises: the caller's job goes on
        result = client.flush(5)
        stats = client.stats()
    finally:
        client.close(timeout=1)
    assert not result.ok
    assert stats["acked"] == 0
    assert stats["pending"] == N, stats
    assert stats["errors"].get("credentials", 0) >= 1, stats  # the token could not be had: counted
    assert stats["errors"].get("auth", 0) >= 1, stats  # NATS refused the connection: no token to present
    assert dbx.service.stats()["denied_by_reason"].get("no token presented", 0) > no_token
    assert dbx.workspace.token_refusals > refusals  # the workspace refused the SDK's client credentials
    assert dbx.workspace.tokens_issued == issued
    assert "the Databricks SDK gave no token" in caplog.text
    assert _new_ids(dbx, stream, ids) == []
    # The secret fixed (a new WorkspaceClient reads it): the spooled events are delivered, exactly once.
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET)
    sdk.set_workspace_client(None)
    client = _client(dbx, spool)
    try:
        result = client.flush(30)
        stats = client.stats()
    finally:
        client.close()
    assert result.ok, stats
    assert sorted(_new_ids(dbx, stream, ids)) == sorted(ids)
    _assert_no_token_material(dbx, caplog.text, json.dumps(read_stream(dbx.admin_url, stream)))
