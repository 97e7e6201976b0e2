"""``DatabricksVerifier``: a ``databricks:`` proof is verified by asking its (trusted) workspace who the token is.

The workspace is ``databricks_oauth_stub`` on loopback: its documented SCIM ``Me`` endpoint answers per bearer
token, and its ``/oidc`` issuer signs OAuth tokens the OIDC path verifies offline.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.identity import natsjwt
from databricks_nats.integrations.identity.config import ServiceConfig
from databricks_nats.integrations.identity.databricks import (
    DatabricksVerifier,
    DatabricksWorkspace,
    encode_proof,
    normalise_host,
)
from databricks_nats.integrations.identity.identity import Identity, Refused
from databricks_nats.integrations.identity.oidc import OidcIssuer, OidcVerifier
from databricks_nats.integrations.identity.service import AuthService
from tests.identity.databricks_oauth_stub import DatabricksOAuthStub, service_principal, user

SP_APP_ID = "0b7e6c52-95a4-4f7e-8f1d-3c2a1b0e9d84"
PAT_SP = "dapi0123456789abcdef0123456789abcdef-2"
PAT_USER = "dapifedcba9876543210fedcba9876543210-3"
PAT_FORBIDDEN = "dapi00000000000000000000000000000000-4"
ME = "GET /api/2.0/preview/scim/v2/Me"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def workspace() -> Iterator[DatabricksOAuthStub]:
    principals = {
        PAT_SP: service_principal(SP_APP_ID, ["team-a-publishers", "users"], display_name="team-a-prod-jobs"),
        PAT_USER: user("ada@example.com", ["admins"], display_name="Ada"),
        PAT_FORBIDDEN: user("mallory@example.com"),
    }
    with DatabricksOAuthStub({SP_APP_ID: "sp-secret"}, principals=principals) as stub:
        stub.forbidden.add(PAT_FORBIDDEN)
        yield stub


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _verifier(stub: DatabricksOAuthStub, clock: Clock | None = None, **kw: Any) -> DatabricksVerifier:
    ws = DatabricksWorkspace(stub.host, workspace_id=stub.workspace_id)
    return DatabricksVerifier([ws], clock=clock or Clock(), **kw)


def _refused(verifier: DatabricksVerifier, proof: str) -> str:
    with pytest.raises(Refused) as caught:
        verifier.verify(proof)
    return caught.value.reason


def _envelope(value: Any) -> str:
    return "databricks:" + base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_a_service_principals_pat_is_introspected_into_its_identity(workspace: DatabricksOAuthStub) -> None:
    identity = _verifier(workspace).verify(encode_proof(workspace.host, PAT_SP))
    assert identity.kind == "databricks"
    assert identity.issuer == workspace.host
    assert identity.subject == SP_APP_ID
    assert identity.expires_at is None
    assert identity.name == f"databricks:{workspace.host}#{SP_APP_ID}"
    claims = dict(identity.claims)
    assert claims.pop("id")
    assert claims == {
        "user_name": SP_APP_ID,
        "application_id": SP_APP_ID,
        "display_name": "team-a-prod-jobs",
        "groups": ["team-a-publishers", "users"],
        "workspace_id": workspace.workspace_id,
        "host": workspace.host,
    }
    assert workspace.paths == [ME]  # nothing but the documented endpoint


def test_a_user_is_named_by_user_name(workspace: DatabricksOAuthStub) -> None:
    identity = _verifier(workspace).verify(encode_proof(workspace.host, PAT_USER))
    assert identity.subject == "ada@example.com"
    assert identity.claims["application_id"] is None
    assert identity.claims["groups"] == ["admins"]


def test_a_host_written_differently_is_the_same_workspace(workspace: DatabricksOAuthStub) -> None:
    host = workspace.host.replace("http://", "HTTP://") + "/"
    assert _verifier(workspace).verify(encode_proof(host, PAT_SP)).subject == SP_APP_ID


@pytest.mark.parametrize(
    "make",
    [
        lambda host: "databricks:",
        lambda host: "databricks:%%%not-base64%%%",
        lambda host: "databricks:" + base64.urlsafe_b64encode(b"not json").decode(),
        lambda host: _envelope([host, PAT_SP]),
        lambda host: _envelope({"token": PAT_SP}),
        lambda host: _envelope({"host": "", "token": PAT_SP}),
        lambda host: _envelope({"host": host, "token": ""}),
        lambda host: _envelope({"host": host, "token": 42}),
        lambda host: _envelope({"host": host, "token": PAT_SP + "\r\nX-Injected: 1"}),
        lambda host: _envelope({"host": host, "token": "x" * 40_000}),
        lambda host: "oidc-looking.jwt.token",
    ],
)
def test_malformed_proofs_are_refused_without_a_request(workspace: DatabricksOAuthStub, make: Any) -> None:
    assert _refused(_verifier(workspace), make(workspace.host)) == "malformed Databricks proof"
    assert workspace.paths == []


def test_an_untrusted_host_is_refused_without_any_request_to_it(workspace: DatabricksOAuthStub) -> None:
    with DatabricksOAuthStub({}, principals={PAT_SP: service_principal(SP_APP_ID)}) as elsewhere:
        verifier = _verifier(workspace)
        for host in (
            elsewhere.host,
            workspace.host.replace("127.0.0.1", "localhost"),  # the same server under another name: not listed
            f"http://127.0.0.1:{workspace.host.rsplit(':', 1)[1]}@{elsewhere.host[7:]}",
        ):
            assert _refused(verifier, encode_proof(host, PAT_SP)) == "workspace not trusted"
        assert elsewhere.paths == []
    assert workspace.paths == []


@pytest.mark.parametrize(("token", "status"), [("dapi-revoked-or-unknown", 401), (PAT_FORBIDDEN, 403)])
def test_tokens_databricks_refuses_are_refused(workspace: DatabricksOAuthStub, token: str, status: int) -> None:
    reason = _refused(_verifier(workspace), encode_proof(workspace.host, token))
    assert reason == "Databricks refused the token"
    assert token not in reason
    assert workspace.me_refusals == 1


def test_an_unreachable_workspace_is_refused_as_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    verifier = DatabricksVerifier([DatabricksWorkspace(f"http://127.0.0.1:{port}")], timeout=2.0)
    assert _refused(verifier, encode_proof(f"http://127.0.0.1:{port}", PAT_SP)) == "Databricks unreachable"


def test_introspections_are_cached_for_cache_ttl_and_refusals_never(
    workspace: DatabricksOAuthStub, clock: Clock
) -> None:
    verifier = _verifier(workspace, clock, cache_ttl=60.0)
    proof = encode_proof(workspace.host, PAT_SP)
    first = verifier.verify(proof)
    clock.now += 59
    assert verifier.verify(proof) == first
    assert workspace.me_requests == 1
    # Revoked at the workspace: still accepted from the cache until cache_ttl, then refused.
    del workspace.principals[PAT_SP]
    clock.now += 0.5
    assert verifier.verify(proof) == first
    clock.now += 1
    assert _refused(verifier, proof) == "Databricks refused the token"
    assert _refused(verifier, proof) == "Databricks refused the token"
    assert workspace.me_requests == 3
    # The cache is keyed by a digest: the verifier keeps no token.
    assert PAT_SP not in repr(vars(verifier))
    assert PAT_SP not in repr(first)


def test_the_cache_is_bounded(workspace: DatabricksOAuthStub, clock: Clock) -> None:
    verifier = _verifier(workspace, clock, cache_size=1)
    verifier.verify(encode_proof(workspace.host, PAT_SP))
    verifier.verify(encode_proof(workspace.host, PAT_USER))
    verifier.verify(encode_proof(workspace.host, PAT_USER))
    assert workspace.me_requests == 2
    verifier.verify(encode_proof(workspace.host, PAT_SP))  # pushed out by the other one
    assert workspace.me_requests == 3


def test_a_cached_jwt_is_not_trusted_beyond_its_own_expiry(workspace: DatabricksOAuthStub, clock: Clock) -> None:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    native = f"{part({'alg': 'RS256'})}.{part({'iss': 'runtime', 'exp': int(clock.now) + 10})}.c2ln"
    workspace.principals[native] = service_principal(SP_APP_ID)
    verifier = _verifier(workspace, clock, cache_ttl=60.0)
    verifier.verify(encode_proof(workspace.host, native))
    clock.now += 5
    verifier.verify(encode_proof(workspace.host, native))
    assert workspace.me_requests == 1
    clock.now += 10  # past its exp, well within cache_ttl: asked again
    verifier.verify(encode_proof(workspace.host, native))
    assert workspace.me_requests == 2


def test_a_workspace_oauth_jwt_is_verified_offline_when_its_issuer_is_trusted(
    workspace: DatabricksOAuthStub,
) -> None:
    token = workspace.mint(SP_APP_ID, "all-apis")
    oidc = OidcVerifier([OidcIssuer(issuer=workspace.issuer, audiences=(SP_APP_ID,))])
    identity = _verifier(workspace, oidc=oidc).verify(encode_proof(workspace.host, token))
    assert (identity.kind, identity.issuer, identity.subject) == ("oidc", workspace.issuer, SP_APP_ID)
    assert identity.expires_at is not None
    assert ME not in workspace.paths
    # Forged: the OIDC verdict stands, the workspace is not asked to vouch for it instead.
    forged = token.rsplit(".", 1)[0] + "." + base64.urlsafe_b64encode(b"x" * 256).decode().rstrip("=")
    assert _refused(_verifier(workspace, oidc=oidc), encode_proof(workspace.host, forged)) == "bad signature"
    assert ME not in workspace.paths


def test_a_workspace_oauth_jwt_is_introspected_when_its_issuer_is_not_trusted(
    workspace: DatabricksOAuthStub,
) -> None:
    token = workspace.mint(SP_APP_ID, "all-apis")
    other = OidcVerifier([OidcIssuer(issuer="https://login.example.com/oauth2/default", audiences=("nats",))])
    for oidc in (None, other):
        identity = _verifier(workspace, oidc=oidc).verify(encode_proof(workspace.host, token))
        assert (identity.kind, identity.subject) == ("databricks", SP_APP_ID)
    assert workspace.me_requests == 2


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("http://dbc-1.cloud.databricks.com", "https://"),
        ("ftp://127.0.0.1", "https://"),
        ("https://dbc-1.cloud.databricks.com/api", "without path"),
        ("https://user@dbc-1.cloud.databricks.com", "without path"),
        ("", "non-empty"),
    ],
)
def test_bad_workspaces_fail_at_configure(host: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        DatabricksWorkspace(host)


def test_bad_verifier_settings_fail_at_configure() -> None:
    ws = DatabricksWorkspace("dbc-1.cloud.databricks.com", workspace_id=1234)  # type: ignore[arg-type]
    assert (ws.host, ws.workspace_id) == ("https://dbc-1.cloud.databricks.com", "1234")
    with pytest.raises(ConfigurationError, match="at least one"):
        DatabricksVerifier([])
    with pytest.raises(ConfigurationError, match="positive"):
        DatabricksVerifier([ws], timeout=0)
    with pytest.raises(ConfigurationError, match=">= 0"):
        DatabricksVerifier([ws], cache_ttl=-1)
    with pytest.raises(ConfigurationError, match="listed twice"):
        DatabricksVerifier([ws, DatabricksWorkspace("https://DBC-1.cloud.databricks.com/")])


def test_normalise_host() -> None:
    assert normalise_host("HTTPS://Dbc-1.Cloud.Databricks.com/") == "https://dbc-1.cloud.databricks.com"
    assert normalise_host("adb-1.2.azuredatabricks.net") == "https://adb-1.2.azuredatabricks.net"


def _config_file(tmp_path: Path, tables: str) -> Path:
    seed, _ = natsjwt.new_account_key()
    (tmp_path / "policy.toml").write_text(
        '[[rules]]\nname = "n"\nwhen = { kind = "databricks" }\npublish = ["dbx.>"]\n'
    )
    path = tmp_path / "auth.toml"
    path.write_text(f'[nats]\nurl = "nats://127.0.0.1:4222"\n[callout]\naccount = "APP"\nissuer_seed = "{seed}"\n'
                    f'policy = "policy.toml"\n{tables}')  # fmt: skip
    return path


def test_the_service_config_trusts_databricks_workspaces(tmp_path: Path, workspace: DatabricksOAuthStub) -> None:
    path = _config_file(tmp_path, f'[[databricks]]\nhost = "{workspace.host}"\nworkspace_id = "42"\n')
    config = ServiceConfig.load(str(path))
    assert config.databricks == (DatabricksWorkspace(workspace.host, "42"),)
    assert "1 workspace" in repr(config)
    service = AuthService(config)
    identity = service._verify(encode_proof(workspace.host, PAT_SP))
    assert isinstance(identity, Identity)
    assert identity.claims["workspace_id"] == "42"
    with pytest.raises(Refused, match="OIDC identities are not accepted here"):
        service._verify("a.b.c")


@pytest.mark.parametrize(
    ("tables", "words"),
    [
        ("", r"trust at least one \[\[oidc\]\], \[\[databricks\]\] or \[aws\]"),
        ('[[databricks]]\nhost = "http://dbc-1.cloud.databricks.com"\n', "https://"),
        ('[[databricks]]\nworkspace_id = "1"\n', "host is required"),
        ('[[databricks]]\nhost = "https://a.example.com"\nhots = "x"\n', "unknown key 'hots'"),
        ('[[databricks]]\nhost = "https://a.example.com"\n[[databricks]]\nhost = "https://A.example.com/"\n', "twice"),
    ],
)
def test_bad_databricks_tables_fail_at_load(tmp_path: Path, tables: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        ServiceConfig.load(str(_config_file(tmp_path, tables)))


def test_without_databricks_workspaces_the_service_refuses_databricks_proofs(tmp_path: Path) -> None:
    path = _config_file(tmp_path, '[aws]\naudience = "nats"\n')
    service = AuthService(ServiceConfig.load(str(path)))
    with pytest.raises(Refused, match="Databricks identities are not accepted here"):
        service._verify(encode_proof("https://dbc-1.cloud.databricks.com", PAT_SP))
