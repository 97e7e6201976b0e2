"""The auth-callout service end to end: a real nats-server (encrypted callout), the service, a loopback OIDC
issuer and STS; clients are databricks-nats's own publisher and plain nats-py connections."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import nats
import pytest

from databricks_nats.client import Client
from databricks_nats.ports import NoContext
from databricks_nats.testing import read_stream
from tests.identity.callout_server import AUDIENCE
from tests.identity.conftest import Stack

pytestmark = pytest.mark.slow

N = 20


def _connect(stack: Stack, token: str, name: str | None = None) -> str | None:
    """Connect with ``token`` (as connection ``name``): None when accepted, else the error nats-py reports."""

    async def run() -> str | None:
        try:
            nc = await nats.connect(
                stack.server.url,
                token=token,
                name=name,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                connect_timeout=5,
            )
        except Exception as e:  # the refusal is the result
            return f"{type(e).__name__}: {e}"
        await nc.close()
        return None

    return asyncio.run(run())


def _ensure_stream(stack: Stack, workspace: str = "ws1", env: str = "dev") -> str:
    admin = Client(stack.settings(url=stack.admin_url, workspace=workspace, env=env), context=NoContext())
    try:
        return admin.ensure_stream().name
    finally:
        admin.close()


def _publish(stack: Stack, n: int = N, **settings: Any) -> dict[str, Any]:
    client = Client(stack.settings(**settings), context=NoContext())
    try:
        for i in range(n):
            client.emit("mlflow.run.metrics", {"experiment_id": "1", "run_id": "r", "metrics": {"i": i}})
        client.flush(30)
        return client.stats()
    finally:
        client.close()


def _denials(stack: Stack) -> dict[str, int]:
    return dict(stack.service.stats()["denied_by_reason"])


def _audited(stack: Stack) -> list[dict[str, Any]]:
    """Every audit event so far (the envelopes), once the service's audit publisher has delivered them."""
    assert stack.service.audit_client.flush(30).ok
    return [m["envelope"] for m in read_stream(stack.admin_url, stack.service.audit_client.settings.stream_name)]


def _unknown_kid(stack: Stack) -> str:
    """Signed by a key the issuer never published, under a kid it never used: one JWKS refresh, still unknown."""
    from tests.identity.oidc_issuer import new_key

    return stack.issuer.mint(
        sub="svc-team-a", aud=AUDIENCE, kid="never-published", key=new_key("RS256"), extra_claims={"groups": ["team-a"]}
    )


def test_a_valid_token_publishes_exactly_where_the_policy_says(stack: Stack, tmp_path) -> None:
    stream = _ensure_stream(stack)
    token = tmp_path / "token"
    token.write_text(stack.mint())
    stats = _publish(stack, oidc_token=f"file:{token}")
    assert stats["acked"] == N, (stats, stack.service.stats(), stack.server.log_text()[-1500:])
    stored = [m for m in read_stream(stack.admin_url, stream) if m["subject"].startswith("dbx.ws1.dev.mlflow.")]
    assert len(stored) == N
    # The same identity pointed at prod: refused by the server, counted, never raised into the caller.
    _ensure_stream(stack, env="prod")
    stats = _publish(stack, env="prod", oidc_token=f"file:{token}")
    assert stats["dropped"].get("permission_denied") == N, stats
    assert stats["acked"] == 0


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: s.mint(exp_in=-120), "token expired"),
        (lambda s: s.mint(nbf_in=600), "token not yet valid"),
        (lambda s: s.mint(aud="someone-else"), "wrong audience"),
        (lambda s: s.mint(iss="https://evil.example.com"), "unknown issuer"),
        (lambda s: s.issuer.forge(sub="svc-team-a", aud="nats-auth"), "bad signature"),
        (lambda s: s.issuer.mint_none(sub="svc-team-a", aud="nats-auth"), "algorithm not allowed"),
        (lambda s: s.issuer.mint_hs256_with_public_key(sub="svc-team-a", aud="nats-auth"), "algorithm not allowed"),
        (_unknown_kid, "unknown signing key"),
        (lambda s: "garbage", "malformed token"),
        (lambda s: s.mint(sub="svc-blocked"), "rule blocked denies"),
        (lambda s: s.mint(sub="svc-nobody", groups=()), "no rule matches (deny by default)"),
    ],
    ids=[
        "expired", "not-yet-valid", "wrong-audience", "wrong-issuer", "forged", "alg-none", "hs256-confusion",
        "unknown-kid", "garbage", "denied-by-rule", "no-rule",
    ],
)  # fmt: skip
def test_a_bad_token_is_refused_with_its_reason_counted_and_audited(
    stack: Stack, make: Any, reason: str, assert_valid_event: Callable[[dict[str, Any]], None]
) -> None:
    """Refused by the real server, counted by reason, and audited: a schema-valid ``system.auth.denied`` event
    for this very connection (found by its name) naming the reason, and holding nothing of the token."""
    token = make(stack)
    stack.tokens.append(token)
    before = _denials(stack).get(reason, 0)
    name = f"refused-{uuid.uuid4().hex[:8]}"
    error = _connect(stack, token, name)
    assert error is not None
    assert "authorization" in error.lower(), error
    assert _denials(stack).get(reason, 0) == before + 1, _denials(stack)
    mine = [e for e in _audited(stack) if e["data"]["client"].get("name") == name]
    assert len(mine) == 1, mine
    event = mine[0]
    assert_valid_event(event)
    assert event["type"].endswith("system.auth.denied")
    assert event["subject"] == "dbx.platform.prod.system.auth.denied"
    assert event["data"]["reason"] == reason
    assert event["data"]["permissions"] == {}
    text = json.dumps(event)
    for part in {token, *token.split(".")} - {""}:
        assert part not in text, "token material in the audit event"


def test_unknown_kid_after_key_rotation_at_the_issuer_is_accepted(stack: Stack) -> None:
    fetches = stack.issuer.jwks_fetches
    stack.issuer.rotate("RS256")  # the new key signs; the service's cached JWKS does not know it yet
    assert _connect(stack, stack.mint()) is None
    assert stack.issuer.jwks_fetches == fetches + 1  # one refresh, then the key is cached
    assert _connect(stack, stack.mint()) is None
    assert stack.issuer.jwks_fetches == fetches + 1


def test_a_policy_change_takes_effect_at_the_next_connect(stack: Stack) -> None:
    from tests.identity.callout_server import POLICY

    token = stack.mint(sub="svc-team-a")
    assert _connect(stack, token) is None
    try:
        stack.write_policy(POLICY.replace('when = { subject = "svc-blocked" }', 'when = { subject = "svc-team-*" }'))
        assert _connect(stack, token) is not None
        assert _denials(stack).get("rule blocked denies", 0) >= 1
    finally:
        stack.write_policy(POLICY)
    assert _connect(stack, token) is None


def test_a_broken_policy_file_keeps_the_previous_policy(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    from tests.identity.callout_server import POLICY

    try:
        with caplog.at_level(logging.ERROR, logger="databricks_nats.auth"):
            stack.write_policy("[[rules]]\nname = 'x'\nwhen = {}\n")
            assert _connect(stack, stack.mint()) is None
        assert "not reloaded" in caplog.text
    finally:
        stack.write_policy(POLICY)


def test_aws_instance_profile_identity_is_verified_through_sts(stack: Stack, monkeypatch, tmp_path) -> None:
    from tests.identity.conftest import AWS_AUDIENCE, AWS_KEY, AWS_SECRET, AWS_TOKEN

    empty = tmp_path / "empty"
    empty.write_text("")
    for name, value in {
        "AWS_ACCESS_KEY_ID": AWS_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_SESSION_TOKEN": AWS_TOKEN,
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    stream = _ensure_stream(stack)
    before, seen = stack.sts.requests, len(read_stream(stack.admin_url, stream))
    stats = _publish(stack, aws_iam=True, identity_audience=AWS_AUDIENCE)
    assert stats["acked"] == N, stats
    assert stack.sts.requests > before  # the proof went to STS (the configured endpoint), and STS said who
    assert len(read_stream(stack.admin_url, stream)) == seen + N
    # Bound to another audience: refused.
    before = _denials(stack)
    stats = _publish(stack, n=1, aws_iam=True, identity_audience="another-cluster", ack_timeout=1.0)
    assert stats["acked"] == 0
    assert sum(_denials(stack).values()) > sum(before.values())


def test_unreadable_requests_are_counted_and_never_stop_the_service(stack: Stack) -> None:
    """What reaches the service's subscription is the server's (only the server publishes there); a request
    that does not open or does not verify is counted and left unanswered, and the service goes on."""
    from databricks_nats.integrations.identity import natsjwt, xkey

    before = stack.service.stats()["unreadable"]
    _, server_xkey = xkey.new_xkey()
    seed, _ = natsjwt.new_account_key()  # a request signed by an account key, not a server's
    forged = natsjwt.encode({"aud": "nats-authorization-request", "nats": {"type": "authorization_request"}}, seed)
    for payload, header in ((b"", server_xkey), (b"\xff" * 64, "XBAD"), (forged.encode(), None), (b"a.b.c", None)):
        assert stack.service.respond(payload, header) is None
    assert stack.service.stats()["unreadable"] == before + 4
    assert _connect(stack, stack.mint()) is None  # still serving


def test_token_expiry_and_a_policy_change_mid_run_lose_nothing(stack: Stack, tmp_path) -> None:
    """Tokens live 6 s; a sidecar rewrites the file every 2 s (as a projected token is). The server ends the
    connection when the NATS user expires; the publisher reconnects with the file's current token. Halfway,
    the policy changes (spark is taken away, mlflow stays): the next connect gets the new permissions."""
    from tests.identity.callout_server import POLICY

    stream = _ensure_stream(stack)
    token = tmp_path / "token"
    token.write_text(stack.mint(exp_in=6))
    stop = threading.Event()

    def sidecar() -> None:
        while not stop.wait(2):
            fresh = stack.mint(exp_in=6)
            (tmp_path / "token.new").write_text(fresh)
            (tmp_path / "token.new").replace(token)

    rotating = threading.Thread(target=sidecar, daemon=True)
    rotating.start()
    seen = {m["envelope"]["id"] for m in read_stream(stack.admin_url, stream)}
    granted = stack.service.stats()["granted"]
    client = Client(stack.settings(oidc_token=f"file:{token}"), context=NoContext())
    ids = []
    try:
        started = time.monotonic()
        changed = False
        while time.monotonic() < started + 16:  # spans two expiries
            if not changed and time.monotonic() > started + 8:
                stack.write_policy(POLICY.replace(', "{prefix}.{workspace}.{env}.spark.>"]', "]", 1))
                changed = True
            event = client.emit("mlflow.run.metrics", {"experiment_id": "1", "run_id": "r", "metrics": {"t": 1}})
            assert event is not None
            ids.append(event.id)
            time.sleep(0.05)
        assert client.flush(60).ok, client.stats()
        stats = client.stats()
    finally:
        stop.set()
        client.close()
        stack.write_policy(POLICY)
    assert stats["connects"] >= 2, stats  # the server ended the expired user's connection at least once
    assert stack.service.stats()["granted"] >= granted + 2
    stored = [m["envelope"]["id"] for m in read_stream(stack.admin_url, stream) if m["envelope"]["id"] not in seen]
    assert sorted(stored) == sorted(ids)  # every event, exactly once
    assert stack.service.audit_client.flush(30).ok
    audit = read_stream(stack.admin_url, stack.service.audit_client.settings.stream_name)
    grants = [m["envelope"]["data"] for m in audit if m["subject"].endswith(".granted")]
    last = [g for g in grants if g["identity"].endswith("#svc-team-a")][-1]
    assert "dbx.ws1.dev.mlflow.>" in last["permissions"]["pub"]["allow"]
    assert "dbx.ws1.dev.spark.>" not in last["permissions"]["pub"]["allow"]  # the new policy, at the next connect


def test_audit_events_name_the_decision_and_never_carry_token_material(stack: Stack, caplog) -> None:
    assert _connect(stack, stack.mint()) is None
    assert _connect(stack, stack.mint(aud="someone-else")) is not None
    assert stack.service.audit_client.flush(30).ok
    events = [m["envelope"] for m in read_stream(stack.admin_url, stack.service.audit_client.settings.stream_name)]
    granted = [e for e in events if e["type"].endswith("system.auth.granted")]
    denied = [e for e in events if e["type"].endswith("system.auth.denied")]
    assert granted, len(events)
    assert denied, len(events)
    grant = granted[-1]["data"]
    assert grant["identity"] == f"oidc:{stack.issuer.url}#svc-team-a"
    assert grant["rule"] == "team-a-dev"
    assert "dbx.ws1.dev.mlflow.>" in grant["permissions"]["pub"]["allow"]
    assert grant["client"]["lang"] == "python3"
    assert {d["data"]["reason"] for d in denied} >= {"wrong audience"}
    assert granted[-1]["subject"] == "dbx.platform.prod.system.auth.granted"
    # No token (nor its signature) anywhere: events, the server's log, our logs.
    haystacks = [json.dumps(events), stack.server.log_text(), caplog.text]
    for token in stack.tokens:
        for part in {token, token.rsplit(".", 1)[-1]} - {""}:
            assert all(part not in h for h in haystacks), "token material leaked"


def test_doctor_shows_the_identity_it_connected_as_and_the_permissions_it_got(stack: Stack, tmp_path) -> None:
    from tests.test_cli_doctor import _doctor

    _ensure_stream(stack)
    token = tmp_path / "token"
    token.write_text(stack.mint())
    r = _doctor(
        "--url", stack.server.url, "--workspace", "ws1", "--env", "dev", DATABRICKS_NATS_OIDC_TOKEN=f"file:{token}"
    )
    out = r.stdout
    assert f"OIDC token of svc-team-a from {stack.issuer.url} for nats-auth" in out, out + r.stderr
    assert f"user oidc:{stack.issuer.url}#svc-team-a in account APP, expires in" in out
    assert "dbx.ws1.dev.mlflow.>" in next(line for line in out.splitlines() if " publish " in line)
    assert "may publish to dbx.ws1.dev.{mlflow,spark}.> (not all of dbx.ws1.dev.>)" in out
    assert token.read_text() not in out + r.stderr
    assert r.returncode == 0, out + r.stderr


@pytest.fixture(autouse=True)
def _auth_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level(logging.INFO, logger="databricks_nats"):
        yield
