"""``oidc_token = "databricks"`` end to end: a bundle job running as a service principal publishes as itself.

The real databricks-sdk authenticates against a loopback workspace (``databricks_oauth_stub``) and the client
presents its token with the workspace's URL (a ``databricks:`` proof). The auth-callout service trusts the
workspace (``[[databricks]]``) and its OIDC issuer (``{host}/oidc``): an OAuth M2M token (``DATABRICKS_CLIENT_ID``,
``DATABRICKS_CLIENT_SECRET``) is verified offline against the issuer's keys; any other token (a PAT through
``DATABRICKS_TOKEN`` here, a job cluster's or serverless' native token in production) is introspected at the
workspace's SCIM ``Me`` endpoint. A real nats-server delegates to the service (encrypted callout); the policy
grants the service principal's application id (and, introspected, its group) publish rights in ws1/dev.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from databricks_nats.client import Client
from databricks_nats.integrations.databricks import sdk
from databricks_nats.integrations.identity.databricks import DatabricksVerifier, DatabricksWorkspace, encode_proof
from databricks_nats.integrations.identity.oidc import OidcIssuer, OidcVerifier
from databricks_nats.integrations.identity.service import AuthService
from databricks_nats.ports import NoContext
from databricks_nats.settings import resolve_settings
from databricks_nats.testing import NatsServer, read_stream
from tests.identity.callout_server import serve_callout
from tests.identity.databricks_oauth_stub import DatabricksOAuthStub, service_principal, user

pytestmark = pytest.mark.slow

N = 20
CLIENT_ID = "5f0c3a8e-1b2d-4c6e-9a7f-2d4b6c8e0a13"  # a service principal's application id
CLIENT_SECRET = "dose-stub-sp-secret-7f3a9c1e5b"
JOB_SP = "9a1d7e3c-4b2f-4e6a-8c5d-0f1e2d3c4b5a"  # a job's service principal, token introspected
JOB_PAT = "dapi5e1c9a7b3d2f4e6a8c0b1d3f5e7a9c2b-3"  # what DATABRICKS_TOKEN holds (a PAT, no JWT)
USER_PAT = "dapi7a2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d-2"  # a user's token: no rule grants users anything
CACHE_TTL = 3600.0

POLICY = """
prefix = "dbx"
max_ttl = "1h"

[[rules]]
name = "bundle-job-sp"
when = {{ kind = "oidc", subject = "{client_id}" }}
workspace = "ws1"
env = "dev"
publish = ["{{prefix}}.{{workspace}}.{{env}}.mlflow.>"]
jetstream = "publisher"

[[rules]]
name = "team-a-job-introspected"
when = {{ kind = "databricks", application_id = "{job_sp}", groups = "team-a-publishers", host = "{host}" }}
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
    principals = {
        JOB_PAT: service_principal(JOB_SP, ["team-a-publishers", "users"], display_name="team-a-dev-jobs"),
        USER_PAT: user("ada@example.com", ["users"]),
    }
    with DatabricksOAuthStub({CLIENT_ID: CLIENT_SECRET}, principals=principals) as workspace:
        # The workspace's issuer; its tokens' audience is the client id (see databricks_oauth_stub).
        oidc_issuers = (OidcIssuer(issuer=workspace.issuer, audiences=(CLIENT_ID,)),)
        workspaces = (DatabricksWorkspace(workspace.host, workspace_id=workspace.workspace_id),)
        # As AuthService builds them from the config, with a cache_ttl no test run can outlast.
        oidc = OidcVerifier(oidc_issuers)
        databricks = DatabricksVerifier(workspaces, oidc=oidc, cache_ttl=CACHE_TTL)
        policy = POLICY.format(client_id=CLIENT_ID, job_sp=JOB_SP, host=workspace.host)
        with serve_callout(
            tmp,
            policy,
            verifiers={"oidc": oidc, "databricks": databricks},
            oidc=oidc_issuers,
            databricks=workspaces,
        ) as served:
            yield DbxStack(served.server, workspace, served.service, tmp, served.admin_url)


def _job_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **variables: str) -> None:
    """The environment of a job: these ``DATABRICKS_*`` variables, and nothing else the SDK could pick up."""
    import os

    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "ARM_", "AZURE_", "GOOGLE_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))  # no ~/.databrickscfg
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(home / "absent.cfg"))
    for name, value in variables.items():
        monkeypatch.setenv(f"DATABRICKS_{name}", value)
    sdk.set_workspace_client(None)  # one WorkspaceClient per process: built from this environment


@pytest.fixture
def sp_env(dbx: DbxStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A job running as the service principal with OAuth M2M."""
    _job_env(monkeypatch, tmp_path, HOST=dbx.workspace.host, CLIENT_ID=CLIENT_ID, CLIENT_SECRET=CLIENT_SECRET)
    try:
        yield
    finally:
        sdk.set_workspace_client(None)


@pytest.fixture
def pat_env(dbx: DbxStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A job whose SDK authenticates with a token that is no JWT (``DATABRICKS_TOKEN``: PAT auth)."""
    _job_env(monkeypatch, tmp_path, HOST=dbx.workspace.host, TOKEN=JOB_PAT)
    try:
        yield monkeypatch
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


def _assert_no_token_material(dbx: DbxStack, *haystacks: str, tokens: tuple[str, ...] = ()) -> None:
    assert dbx.workspace.tokens or tokens, "no token was minted: nothing was checked"
    for token in (*dbx.workspace.tokens, *tokens):
        proof = encode_proof(dbx.workspace.host, token)  # what the client presented
        for part in (token, token.rsplit(".", 1)[-1], proof, proof[len("databricks:") :][:40]):
            assert all(part not in h for h in haystacks), "token material leaked"
    assert all(CLIENT_SECRET not in h for h in haystacks), "the client secret leaked"


def _audit(dbx: DbxStack) -> list[dict[str, Any]]:
    assert dbx.service.audit_client.flush(30).ok
    return [m["envelope"] for m in read_stream(dbx.admin_url, dbx.service.audit_client.settings.stream_name)]


def _publish(dbx: DbxStack, spool: Path, n: int = N, flush: float = 30) -> tuple[list[str], bool, dict[str, Any]]:
    client = _client(dbx, spool)
    try:
        ids = _emit(client, n)  # never raises, whatever the service decides
        result = client.flush(flush)
        return ids, result.ok, client.stats()
    finally:
        client.close(timeout=1 if flush < 30 else 10)


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
    # An OAuth JWT of a trusted issuer is verified offline: the workspace is never asked who it is.
    assert dbx.workspace.me_requests == 0
    # The audit names the service principal as the workspace issuer's subject, and the rule that matched.
    audit = _audit(dbx)
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


def test_a_job_whose_token_is_no_jwt_publishes_through_introspection(
    dbx: DbxStack, pat_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stream = _stream(dbx)
    asked, granted = dbx.workspace.me_requests, dbx.service.stats()["granted"]
    ids, ok, stats = _publish(dbx, tmp_path / "spool")
    assert ok, (stats, dbx.service.stats())
    assert stats["acked"] == N
    assert sorted(_new_ids(dbx, stream, ids)) == sorted(ids)
    assert dbx.service.stats()["granted"] > granted
    assert dbx.workspace.me_requests == asked + 1  # the workspace said who the token is
    # The identity is the service principal the workspace named, matched by application id, group and host.
    grants = [e["data"] for e in _audit(dbx) if e["type"].endswith("system.auth.granted")]
    assert grants[-1]["identity"] == f"databricks:{dbx.workspace.host}#{JOB_SP}"
    assert grants[-1]["rule"] == "team-a-job-introspected"
    events = json.dumps(read_stream(dbx.admin_url, stream))
    _assert_no_token_material(dbx, caplog.text, events, json.dumps(_audit(dbx)), dbx.server.log_text(),
                              tokens=(JOB_PAT,))  # fmt: skip


def test_connects_within_the_cache_ttl_ask_the_workspace_once(
    dbx: DbxStack, pat_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = f"dapi{uuid.uuid4().hex}-2"  # a token the service has never seen
    dbx.workspace.principals[token] = service_principal(JOB_SP, ["team-a-publishers"])
    pat_env.setenv("DATABRICKS_TOKEN", token)
    sdk.set_workspace_client(None)
    stream = _stream(dbx)
    asked, granted = dbx.workspace.me_requests, dbx.service.stats()["granted"]
    delivered = []
    for i in range(3):  # three jobs, three connections, one token
        ids, ok, stats = _publish(dbx, tmp_path / f"spool-{i}", n=2)
        assert ok, stats
        delivered += ids
    assert sorted(_new_ids(dbx, stream, delivered)) == sorted(delivered)
    assert dbx.service.stats()["granted"] >= granted + 3
    assert dbx.workspace.me_requests == asked + 1


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("dapi-revoked-0000000000000000000000000000", "Databricks refused the token"),
        (USER_PAT, "no rule matches (deny by default)"),
    ],
)
def test_a_token_the_workspace_or_the_policy_refuses_is_counted_never_raised(
    dbx: DbxStack,
    pat_env: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    token: str,
    reason: str,
) -> None:
    pat_env.setenv("DATABRICKS_TOKEN", token)
    sdk.set_workspace_client(None)
    stream = _stream(dbx)
    denied = dict(dbx.service.stats()["denied_by_reason"])
    ids, ok, stats = _publish(dbx, tmp_path / "spool", flush=5)
    assert not ok
    assert stats["acked"] == 0
    assert stats["pending"] == N, stats  # spooled, for when the identity is fixed
    assert stats["errors"].get("auth", 0) >= 1, stats
    now = dbx.service.stats()["denied_by_reason"]
    assert [k for k in now if now[k] > denied.get(k, 0)] == [reason]
    assert _new_ids(dbx, stream, ids) == []
    denials = [e["data"] for e in _audit(dbx) if e["type"].endswith("system.auth.denied")]
    assert denials[-1]["reason"] == reason
    _assert_no_token_material(dbx, caplog.text, json.dumps(_audit(dbx)), dbx.server.log_text(), tokens=(token,))


def test_a_token_for_an_untrusted_workspace_is_refused_without_a_request_to_it(
    dbx: DbxStack, pat_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with DatabricksOAuthStub({}, principals={JOB_PAT: service_principal(JOB_SP, ["team-a-publishers"])}) as other:
        pat_env.setenv("DATABRICKS_HOST", other.host)
        sdk.set_workspace_client(None)
        denied = dbx.service.stats()["denied_by_reason"].get("workspace not trusted", 0)
        _, ok, stats = _publish(dbx, tmp_path / "spool", n=1, flush=5)
        assert not ok
        assert stats["acked"] == 0
        assert dbx.service.stats()["denied_by_reason"].get("workspace not trusted", 0) > denied
        # The SDK talked to its workspace; the service never did (no SCIM Me there, no request for it anywhere).
        assert "GET /api/2.0/preview/scim/v2/Me" not in other.paths
        assert other.me_requests == 0
    _assert_no_token_material(dbx, caplog.text, json.dumps(_audit(dbx)), tokens=(JOB_PAT,))


@pytest.mark.parametrize("auth", ["oauth", "pat"])
def test_the_client_presents_the_sdks_token_with_its_workspace(
    dbx: DbxStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, auth: str
) -> None:
    from databricks_nats.integrations.identity.sources import DatabricksToken, jwt_expiry

    if auth == "oauth":
        _job_env(monkeypatch, tmp_path, HOST=dbx.workspace.host + "/", CLIENT_ID=CLIENT_ID, CLIENT_SECRET=CLIENT_SECRET)
    else:
        _job_env(monkeypatch, tmp_path, HOST=dbx.workspace.host, TOKEN=JOB_PAT)
    try:
        presented = DatabricksToken(10.0).token()
    finally:
        sdk.set_workspace_client(None)
    proof = presented.value.reveal()
    inner = dbx.workspace.tokens[-1] if auth == "oauth" else JOB_PAT
    assert proof == encode_proof(dbx.workspace.host, inner)
    assert json.loads(base64.urlsafe_b64decode(proof[len("databricks:") :] + "==="))["host"] == dbx.workspace.host
    # An OAuth JWT's exp is when the client gets a new one; a PAT carries none.
    assert presented.expires_at == (jwt_expiry(inner) if auth == "oauth" else None)
    assert presented.expires_at is not None or auth == "pat"
    assert inner not in repr(presented)
