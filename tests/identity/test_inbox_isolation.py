"""Inboxes per token, end to end: a real nats-server (encrypted callout) and the service.

Without them every identity could subscribe to ``_INBOX.>`` and read what others receive there: JetStream
acks, pulled messages, request replies. The service grants ``_INBOX.<h>.>`` for the token presented
(``transport.auth.inbox_prefix``); our connections use that prefix; ``inbox = "shared"`` restores the old grant.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest

from databricks_nats.client import Client
from databricks_nats.consumer import subscribe
from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.identity.config import ServiceConfig
from databricks_nats.integrations.identity.oidc import OidcIssuer
from databricks_nats.ports import NoContext
from databricks_nats.testing import read_stream
from databricks_nats.transport.auth import inbox_prefix
from databricks_nats.transport.loop import LoopThread
from databricks_nats.values import Secret
from tests.identity.callout_server import AUDIENCE, serve_callout
from tests.identity.conftest import Stack

pytestmark = pytest.mark.slow

N = 20
# A dev publisher, a prod publisher and a prod reader: three identities, two environments.
POLICY = """
prefix = "dbx"
max_ttl = "1h"
workspace = "ws1"

[[rules]]
name = "team-a-dev"
when = { subject = "svc-team-a", groups = "team-a" }
env = "dev"
publish = ["{prefix}.{workspace}.{env}.mlflow.>"]
jetstream = "publisher"

[[rules]]
name = "prod-publisher"
when = { subject = "svc-prod" }
env = "prod"
publish = ["{prefix}.{workspace}.{env}.mlflow.>"]
jetstream = "publisher"

[[rules]]
name = "prod-reader"
when = { subject = "svc-reader" }
env = "prod"
subscribe = ["{prefix}.{workspace}.{env}.>"]
jetstream = "consumer"
"""


@pytest.fixture(scope="module")
def iso(stack: Stack) -> Stack:
    stack.write_policy(POLICY)
    for env in ("dev", "prod"):
        admin = Client(stack.settings(url=stack.admin_url, env=env), context=NoContext())
        try:
            admin.ensure_stream()
        finally:
            admin.close()
    return stack


def _token_file(stack: Stack, tmp: Path, sub: str, **kw: Any) -> tuple[Path, str]:
    token = stack.mint(sub=sub, **kw)
    path = tmp / f"token-{sub}-{uuid.uuid4().hex[:6]}"
    path.write_text(token)
    return path, token


def _emit(client: Client, n: int = N) -> list[str]:
    ids = []
    for i in range(n):
        event = client.emit("mlflow.run.metrics", {"experiment_id": "1", "run_id": "r", "metrics": {"i": i}})
        assert event is not None
        ids.append(event.id)
    return ids


class Snooper:
    """A raw nats-py connection on a loop thread of its own that subscribes where it is told and keeps what it
    receives and every error the server reports."""

    def __init__(self, url: str, token: str, prefix: str | None) -> None:
        self.thread = LoopThread("snooper")
        self.received: list[str] = []
        self.errors: list[str] = []
        self.nc: Any = None
        options: dict[str, Any] = {"inbox_prefix": prefix} if prefix else {}

        async def on_error(e: Exception) -> None:
            self.errors.append(str(e))

        async def connect() -> None:
            self.nc = await nats.connect(url, token=token, error_cb=on_error, connect_timeout=5, **options)

        self.thread.run(connect(), timeout=30)

    def subscribe(self, *subjects: str) -> None:
        async def on_msg(msg: Any) -> None:
            self.received.append(msg.subject)

        async def run() -> None:
            for subject in subjects:
                await self.nc.subscribe(subject, cb=on_msg)
            await self.nc.flush()

        self.thread.run(run(), timeout=30)

    def refused(self, subject: str) -> bool:
        """Whether the server reported a permissions violation for subscribing to ``subject`` (a subject ending
        in ``*``: any under that prefix). nats-py reports it from its read loop before the flush's answer."""
        start = subject[:-1] if subject.endswith("*") else f'{subject}"'
        wanted = f'permissions violation for subscription to "{start}'.lower()
        return any(wanted in e.lower() for e in self.errors)

    def run(self, coro: Any) -> Any:
        return self.thread.run(coro, timeout=60)

    def close(self) -> None:
        async def run() -> None:
            await self.nc.flush()
            await self.nc.close()

        try:
            self.thread.run(run(), timeout=30)
        finally:
            self.thread.stop()


def test_a_dev_identity_cannot_read_prod_replies_while_prod_works(iso: Stack, tmp_path: Path) -> None:
    """The dev publisher asks for ``_INBOX.>`` and for the prod parts' very inboxes: refused; meanwhile a prod
    publisher and a prod consumer (the library's own) work, and none of their acks or pulled events reach it."""
    dev = iso.mint(sub="svc-team-a")
    pub_file, pub_token = _token_file(iso, tmp_path, "svc-prod", groups=())
    reader_file, reader_token = _token_file(iso, tmp_path, "svc-reader", groups=())
    theirs = [f"{inbox_prefix(t)}.>" for t in (pub_token, reader_token)]
    snooper = Snooper(iso.server.url, dev, inbox_prefix(dev))
    try:
        snooper.subscribe("_INBOX.>", *theirs, f"{inbox_prefix(dev)}.>")
        for subject in ("_INBOX.>", *theirs):
            assert snooper.refused(subject), snooper.errors
        assert not snooper.refused(f"{inbox_prefix(dev)}.>")  # its own inboxes: granted

        publisher = Client(iso.settings(env="prod", oidc_token=f"file:{pub_file}"), context=NoContext())
        try:
            ids = _emit(publisher)
            assert publisher.flush(30).ok, publisher.stats()  # acks arrive on the prod publisher's own inbox
            stats = publisher.stats()
        finally:
            publisher.close()
        assert stats["acked"] >= N, stats
        with subscribe(
            "mlflow.run.metrics", start="all", url=iso.server.url, workspace="ws1", env="prod",
            oidc_token=f"file:{reader_file}",
        ) as sub:  # fmt: skip
            got = []
            while len(got) < N:
                event = sub.next(timeout=30)
                got.append(event.id)
        assert set(ids) <= set(got)  # pulled through the reader's own inbox
    finally:
        snooper.close()
    assert snooper.received == []  # no ack, no pulled event, no reply of anyone else


def test_the_inbox_rule_is_what_a_raw_client_must_follow(iso: Stack) -> None:
    """A plain nats-py client with ``inbox_prefix`` per the documented rule gets its JetStream acks (and the
    server's answer to who it is); one with the default ``_INBOX`` prefix cannot subscribe for the ack."""
    token = iso.mint(sub="svc-prod", groups=())
    right = Snooper(iso.server.url, token, inbox_prefix(token))
    wrong = Snooper(iso.server.url, token, None)
    subject, stream = "dbx.ws1.prod.mlflow.raw.probe", "DBX_ws1_prod"  # outside the consumer test's filter

    async def publish(client: Snooper) -> str:
        try:
            ack = await client.nc.jetstream(timeout=3).publish(
                subject, b"{}", headers={"Nats-Msg-Id": uuid.uuid4().hex}
            )
        except Exception as e:  # the failure is the result
            return type(e).__name__
        return f"acked by {ack.stream}"

    async def whoami(client: Snooper) -> dict[str, Any]:
        reply = await client.nc.request("$SYS.REQ.USER.INFO", b"", timeout=5)
        return json.loads(reply.data)["data"]  # type: ignore[no-any-return]

    try:
        assert right.run(publish(right)) == f"acked by {stream}"
        info = right.run(whoami(right))
        assert info["permissions"]["subscribe"]["allow"] == [f"{inbox_prefix(token)}.>"]
        assert right.errors == []
        assert wrong.run(publish(wrong)) == "TimeoutError"
        assert wrong.refused("_INBOX.*"), wrong.errors  # its request mux, _INBOX.<nuid>.*
    finally:
        right.close()
        wrong.close()


def test_a_renewed_token_restarts_the_connection_with_its_inbox_exactly_once(
    iso: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tokens live 6 s; a sidecar rewrites the file every 2 s. Ahead of each expiry the publisher reads the new
    token and restarts its connection with that token's inbox (the old inbox is not granted to the new user):
    acks keep coming, every event is stored exactly once."""
    seen = {m["envelope"]["id"] for m in read_stream(iso.admin_url, "DBX_ws1_dev")}
    token = tmp_path / "token"
    token.write_text(iso.mint(exp_in=6))
    stop = threading.Event()

    def sidecar() -> None:
        while not stop.wait(2):
            (tmp_path / "token.new").write_text(iso.mint(exp_in=6))
            (tmp_path / "token.new").replace(token)

    rotating = threading.Thread(target=sidecar, daemon=True)
    rotating.start()
    client = Client(iso.settings(oidc_token=f"file:{token}"), context=NoContext())
    ids = []
    try:
        with caplog.at_level(logging.INFO, logger="databricks_nats"):
            started = time.monotonic()
            while time.monotonic() < started + 14:  # spans two renewals at least
                ids += _emit(client, 1)
                time.sleep(0.05)
            assert client.flush(60).ok, client.stats()
        stats = client.stats()
    finally:
        stop.set()
        client.close()
    assert stats["connects"] >= 3, stats
    assert "identity token renewed" in caplog.text
    stored = [m["envelope"]["id"] for m in read_stream(iso.admin_url, "DBX_ws1_dev") if m["envelope"]["id"] not in seen]
    assert sorted(stored) == sorted(ids)  # every event, exactly once
    assert iso.service.audit_client.flush(30).ok
    audit = read_stream(iso.admin_url, iso.service.audit_client.settings.stream_name)
    inboxes = {f"{inbox_prefix(t)}.>" for t in iso.tokens}
    granted = [
        m["envelope"]["data"]["permissions"]["sub"]["allow"]
        for m in audit
        if m["subject"].endswith(".granted") and m["envelope"]["data"]["identity"].endswith("#svc-team-a")
    ]
    assert all(len(allow) == 1 and allow[0] in inboxes for allow in granted), granted  # one token's inbox each
    assert len({allow[0] for allow in granted}) >= 3


def test_shared_inboxes_restore_the_old_grant_and_a_bad_mode_fails_at_load(iso: Stack, tmp_path: Path) -> None:
    """``inbox = "shared"``: every identity may subscribe to ``_INBOX.>`` again (clients that cannot set an inbox
    prefix), reading others' replies — the weaker mode the docs warn about. An unknown mode fails at load."""
    oidc = (OidcIssuer(issuer=iso.issuer.url, audiences=(AUDIENCE,)),)
    with serve_callout(tmp_path, POLICY, oidc=oidc, inbox="shared") as served:
        admin = Client(iso.settings(url=served.admin_url, env="prod"), context=NoContext())
        try:
            admin.ensure_stream()
        finally:
            admin.close()
        dev = iso.mint(sub="svc-team-a")
        snooper = Snooper(served.server.url, dev, None)
        prod = Snooper(served.server.url, iso.mint(sub="svc-prod", groups=()), None)
        try:
            snooper.subscribe("_INBOX.>")
            ack = prod.run(prod.nc.jetstream(timeout=5).publish("dbx.ws1.prod.mlflow.run.metrics.x", b"{}"))
            assert ack.stream == "DBX_ws1_prod"  # the default prefix works
            deadline = time.monotonic() + 10
            while not snooper.received and time.monotonic() < deadline:
                time.sleep(0.05)
            assert snooper.received  # and the dev identity read the prod publisher's ack
            assert not any("permissions violation" in e.lower() for e in snooper.errors + prod.errors)
        finally:
            snooper.close()
            prod.close()

    config = tmp_path / "auth.toml"

    def write(inbox: str) -> str:
        config.write_text(
            f'[callout]\naccount = "APP"\npolicy = "policy.toml"\nissuer_seed = "x"\n{inbox}\n'
            f'[[oidc]]\nissuer = "{iso.issuer.url}"\naudiences = ["{AUDIENCE}"]\n'
        )
        return str(config)

    assert ServiceConfig.load(write("")).inbox == "per-token"
    assert ServiceConfig.load(write('inbox = "shared"')).inbox == "shared"
    write('inbox = "private"')
    with pytest.raises(ConfigurationError, match=r'inbox must be "per-token" .* or "shared"'):
        ServiceConfig.load(str(config))
    with pytest.raises(ConfigurationError, match="not 'private'"):
        ServiceConfig(nats=iso.settings(), account="APP", issuer_seed=Secret("x"), policy="p", inbox="private")
