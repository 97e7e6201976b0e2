"""``databricks-nats auth-service`` as an operator runs it: ``--new-keys DIR``, then ``--config FILE`` in a process.

The served case is the whole path of a deployment: keys made by ``--new-keys`` and the ``auth_callout`` block
it printed, a service config in the shape of deploy/auth-service/auth-service.toml (secrets in files, the policy
next to it), a real nats-server with an encrypted callout, the loopback OIDC issuer. The CLI is a subprocess;
it is ready when it logs that it serves. A valid token publishes, a bad one is refused; SIGTERM ends the
process with status 0 and its audit events (grants and refusals) are in the stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest

from databricks_nats.client import Client
from databricks_nats.integrations.identity import xkey
from databricks_nats.ports import NoContext
from databricks_nats.settings import resolve_settings
from databricks_nats.testing import NatsServer, read_stream
from tests.identity.callout_server import AUDIENCE, POLICY, callout_config
from tests.identity.oidc_issuer import OidcIssuerStub

READY = "auth: serving $SYS.REQ.USER.AUTH for account APP"
N = 5


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_NATS_", "DATABRICKS_"))}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "databricks_nats.cli", "auth-service", *args]


def _new_keys(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command("--new-keys", str(directory)), capture_output=True, text=True, env=_env(), timeout=120, check=False
    )


def _printed_keys(out: str) -> tuple[str, str]:
    """The issuer and xkey public keys of the printed ``auth_callout`` block."""
    issuer = re.search(r'^\s*issuer: "(A[A-Z2-7]{55})"$', out, re.M)
    xkey_public = re.search(r'^\s*xkey: "(X[A-Z2-7]{55})"$', out, re.M)
    assert issuer, out
    assert xkey_public, out
    return issuer.group(1), xkey_public.group(1)


# ---- --new-keys ---------------------------------------------------------------------------------------------------


def test_new_keys_writes_an_owner_only_pair_and_prints_their_public_halves(tmp_path: Path) -> None:
    keys = tmp_path / "new" / "keys"
    r = _new_keys(keys)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in keys.iterdir()) == ["issuer.nk", "xkey.nk"]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for name in ("issuer.nk", "xkey.nk"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    issuer_seed, xkey_seed = ((keys / n).read_text().strip() for n in ("issuer.nk", "xkey.nk"))
    assert issuer_seed.startswith("SA")
    assert xkey_seed.startswith("SX")
    issuer, xkey_public = _printed_keys(r.stdout)
    assert issuer == nkeys.from_seed(issuer_seed.encode()).public_key.decode()
    assert xkey_public == xkey.public_key(xkey_seed)
    assert issuer_seed not in r.stdout + r.stderr
    assert xkey_seed not in r.stdout + r.stderr


@pytest.mark.parametrize("existing", ["issuer.nk", "xkey.nk", "both"])
def test_new_keys_never_overwrites_and_writes_nothing_when_a_key_exists(tmp_path: Path, existing: str) -> None:
    """Every file is checked before any is written: with only xkey.nk there, no lone issuer.nk (whose public
    half was never printed) is left behind."""
    keys = tmp_path / "keys"
    keys.mkdir()
    names = ["issuer.nk", "xkey.nk"] if existing == "both" else [existing]
    for name in names:
        (keys / name).write_text("the operator's key\n")
    r = _new_keys(keys)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "exists: keys are never overwritten" in r.stderr
    assert r.stdout == ""
    assert sorted(p.name for p in keys.iterdir()) == sorted(names)
    assert all((keys / name).read_text() == "the operator's key\n" for name in names)


def test_new_keys_into_something_that_is_not_a_directory_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    r = _new_keys(tmp_path / "a-file")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"{tmp_path / 'a-file'} is not a directory" in r.stderr
    assert (tmp_path / "a-file").read_text() == ""
    assert "Traceback" not in r.stderr


# ---- --config FILE ------------------------------------------------------------------------------------------------


class Service:
    """The CLI in a process; its stderr (the log) is collected by a thread."""

    def __init__(self, config: Path) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            _command("--config", str(config)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if READY in line:
                self.ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self) -> None:
        # The process ending (a bad config) ends the wait too: its log says why.
        while not self.ready.wait(0.2):
            assert self.proc.poll() is None, f"the service exited with {self.proc.returncode}:\n{self.output}"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)  # a hang fails here
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _write_config(tmp: Path, server: NatsServer, issuer: OidcIssuerStub, keys: Path) -> tuple[Path, str]:
    """auth-service.toml in the shape of the shipped example (passwords and seeds in files); returns its path
    and the audit stream's name."""
    (tmp / "auth-password").write_text("auth-pw\n")
    (tmp / "audit-password").write_text("audit-pw\n")
    (tmp / "policy.toml").write_text(POLICY)
    audit: dict[str, Any] = {
        "url": server.url,
        "user": "audit",
        "password": str(tmp / "audit-password"),
        "workspace": "platform",
        "env": "prod",
        "spool_dir": str(tmp / "audit-spool"),
    }
    toml = lambda table: "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())  # noqa: E731
    text = f"""
[nats]
{toml({"url": server.url, "user": "auth", "password": str(tmp / "auth-password")})}

[callout]
account = "APP"
issuer_seed = {json.dumps(str(keys / "issuer.nk"))}
xkey_seed = {json.dumps(str(keys / "xkey.nk"))}
policy = "policy.toml"
workers = 4

[[oidc]]
issuer = {json.dumps(issuer.url)}
audiences = [{json.dumps(AUDIENCE)}]

[audit]
{toml(audit)}
"""
    path = tmp / "auth-service.toml"
    path.write_text(text)
    stream = resolve_settings(environ={}, spark_conf={}, **audit).stream_name
    return path, stream


def _refusal(url: str, token: str) -> str | None:
    """Connect with ``token``: None when accepted, else the error nats-py reports."""

    async def run() -> str | None:
        try:
            nc = await nats.connect(
                url, token=token, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=5
            )
        except Exception as e:  # the refusal is the result
            return f"{type(e).__name__}: {e}"
        await nc.close()
        return None

    return asyncio.run(run())


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[NatsServer, OidcIssuerStub, Path, str]]:
    """Keys from ``--new-keys``, the server configured with the block it printed, the issuer, the config."""
    r = _new_keys(tmp_path / "keys")
    assert r.returncode == 0, r.stderr
    issuer_public, xkey_public = _printed_keys(r.stdout)
    server_config = callout_config(
        tmp_path / "server.conf",
        issuer_public=issuer_public,
        auth_user="auth",
        auth_password="auth-pw",
        xkey_public=xkey_public,
        extra_users=[
            {"user": "audit", "password": "audit-pw", "account": "APP"},
            {"user": "admin", "password": "admin-pw", "account": "APP"},
        ],
    )
    with NatsServer(config=server_config) as server, OidcIssuerStub() as issuer:
        config, stream = _write_config(tmp_path, server, issuer, tmp_path / "keys")
        yield server, issuer, config, stream


@pytest.mark.slow
def test_the_cli_serves_until_sigterm_and_its_decisions_are_audited(
    deployment: tuple[NatsServer, OidcIssuerStub, Path, str],
    tmp_path: Path,
    assert_valid_event: Callable[[dict[str, Any]], None],
) -> None:
    server, issuer, config, audit_stream = deployment
    admin_url = server.url.replace("nats://", "nats://admin:admin-pw@")
    namespace = {"workspace": "ws1", "env": "dev", "ack_timeout": 2.0}
    admin = Client(resolve_settings(environ={}, spark_conf={}, **namespace, url=admin_url,
                                    spool_dir=str(tmp_path / "spool-admin")), context=NoContext())  # fmt: skip
    try:
        stream = admin.ensure_stream().name
    finally:
        admin.close()
    good = issuer.mint(sub="svc-team-a", aud=AUDIENCE, extra_claims={"groups": ["team-a"]})
    bad = issuer.mint(sub="svc-team-a", aud="someone-else", extra_claims={"groups": ["team-a"]})
    (tmp_path / "token").write_text(good)

    service = Service(config)
    try:
        service.wait_ready()
        token_file = f"file:{tmp_path / 'token'}"
        client = Client(
            resolve_settings(environ={}, spark_conf={}, **namespace, url=server.url, oidc_token=token_file,
                             auto_create_stream=False, spool_dir=str(tmp_path / "spool")),
            context=NoContext(),
        )  # fmt: skip
        try:
            for i in range(N):
                client.emit("mlflow.run.metrics", {"experiment_id": "1", "run_id": "r", "metrics": {"i": i}})
            client.flush(30)
            stats = client.stats()
        finally:
            client.close()
        assert stats["acked"] == N, (stats, service.output[-3000:])
        error = _refusal(server.url, bad)
        assert error is not None
        assert "authorization" in error.lower(), error
        code = service.stop()
    finally:
        service.kill()
    output = service.output
    assert code == 0, output
    assert "auth: stopping" in output, output

    assert len([m for m in read_stream(admin_url, stream) if m["subject"].startswith("dbx.ws1.dev.mlflow.")]) == N
    events = [m["envelope"] for m in read_stream(admin_url, audit_stream)]
    for event in events:
        assert_valid_event(event)
    granted = [e["data"] for e in events if e["type"].endswith("system.auth.granted")]
    denied = [e["data"] for e in events if e["type"].endswith("system.auth.denied")]
    assert granted, events
    assert {(g["identity"], g["rule"]) for g in granted} == {(f"oidc:{issuer.url}#svc-team-a", "team-a-dev")}
    assert [d["reason"] for d in denied] == ["wrong audience"], denied
    for token in (good, bad):
        for part in (token, token.rsplit(".", 1)[-1]):
            assert part not in json.dumps(events) + output, "token material leaked"
