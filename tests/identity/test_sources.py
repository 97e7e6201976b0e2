"""The client side of identity-bound publishing: the ``oidc_token`` sources, the settings that name them, and
the credential provider presenting a fresh token at every connect (reading it again before it expires), bound
per connection with the token's own inbox prefix."""

from __future__ import annotations

import asyncio
import base64
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.identity.sources import (
    AwsIamToken,
    CommandToken,
    DatabricksToken,
    EnvToken,
    FileToken,
    token_source,
)
from databricks_nats.integrations.identity.unverified import jwt_expiry
from databricks_nats.settings import resolve_settings
from databricks_nats.transport.auth import auth_options, inbox_prefix, resolve_credentials
from databricks_nats.transport.credential_provider import CredentialProvider
from databricks_nats.values import Secret


def _jwt(exp: float | None, sub: str = "svc") -> str:
    """A JWT-shaped token (the client never verifies it; the auth service does)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {"sub": sub, **({"exp": int(exp)} if exp is not None else {})}
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def _settings(**kw: Any) -> Any:
    return resolve_settings(environ={}, spark_conf={}, **kw)


@pytest.mark.parametrize(
    ("value", "source"),
    [
        ("env:MY_TOKEN", EnvToken("MY_TOKEN")),
        ("file:/var/run/token", FileToken("/var/run/token")),
        ("/var/run/token", FileToken("/var/run/token")),
        ("command:az account get-access-token", CommandToken("az account get-access-token")),
        ("databricks", DatabricksToken(10.0)),
    ],
)
def test_oidc_token_names_its_source(value: str, source: Any) -> None:
    assert token_source(_settings(oidc_token=value)) == source


def test_aws_iam_names_its_source_with_audience_and_region() -> None:
    settings = _settings(aws_iam=True, identity_audience="nats-prod", aws_region="eu-west-1")
    assert token_source(settings) == AwsIamToken("nats-prod", "eu-west-1")
    assert token_source(_settings()) is None


@pytest.mark.parametrize(
    ("kw", "setting", "words"),
    [
        ({"oidc_token": "vault"}, "oidc_token", "env:<VARIABLE>, file:<path>"),
        ({"oidc_token": "env:"}, "oidc_token", "expected one of"),
        ({"oidc_token": "env:NOT A NAME"}, "oidc_token", "environment variable name"),
        ({"oidc_token": "env:T", "aws_iam": True}, "aws_iam", "choose one identity"),
        ({"oidc_token": "env:T", "token": "static"}, "oidc_token", "unset token"),
        ({"aws_iam": True, "secret_scope": "nats"}, "aws_iam", "unset secret_scope"),
    ],
)
def test_bad_identity_settings_fail_at_configure(kw: dict[str, Any], setting: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words) as caught:
        _settings(**kw)
    assert caught.value.setting == setting


def test_env_and_file_tokens_carry_their_expiry_and_errors_carry_no_value(tmp_path: Path, monkeypatch) -> None:
    exp = time.time() + 600
    monkeypatch.setenv("MY_TOKEN", _jwt(exp))
    got = EnvToken("MY_TOKEN").token()
    assert got.expires_at == int(exp)
    assert "MY_TOKEN" in repr(got)
    assert got.value.reveal() not in repr(got)
    path = tmp_path / "token"
    path.write_text("opaque-token-without-expiry\n")
    assert FileToken(str(path)).token().value.reveal() == "opaque-token-without-expiry"
    assert FileToken(str(path)).token().expires_at is None
    monkeypatch.delenv("MY_TOKEN")
    with pytest.raises(ConfigurationError, match="MY_TOKEN is not set"):
        EnvToken("MY_TOKEN").token()
    with pytest.raises(ConfigurationError, match="cannot read"):
        FileToken(str(tmp_path / "missing")).token()
    path.write_text("  \n")
    with pytest.raises(ConfigurationError, match="empty token"):
        FileToken(str(path)).token()


def test_a_command_token_is_its_standard_output_and_a_failing_command_names_no_output(tmp_path: Path) -> None:
    token = _jwt(time.time() + 60)
    ok = f"{shlex.quote(sys.executable)} -c {shlex.quote(f'print({token!r})')}"
    got = CommandToken(ok).token()
    assert got.value.reveal() == token
    assert got.expires_at is not None
    script = 'import sys; print("leaked"); sys.exit(3)'
    failing = f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    with pytest.raises(ConfigurationError, match="exited with 3") as caught:
        CommandToken(failing).token()
    assert "leaked" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="failed: FileNotFoundError"):
        CommandToken("/nonexistent/token-helper").token()


def test_jwt_expiry_reads_exp_and_ignores_what_is_not_a_jwt() -> None:
    assert jwt_expiry(_jwt(1234567890)) == 1234567890
    assert jwt_expiry(_jwt(None)) is None
    for other in ("opaque", "a.b", "a.!!!.c", "aws-iam:eyJ9"):
        assert jwt_expiry(other) is None


def test_a_fast_source_is_read_at_every_connect_and_binds_its_token_and_inbox_per_connection(tmp_path: Path) -> None:
    """A file (or a variable) is read again at every connect, whatever ``credentials_ttl``; the token is a fixed
    option of the connection (not a callback nats-py reads at its own reconnects) with that token's inbox prefix,
    and a new token means a new connection."""
    path = tmp_path / "token"
    first = _jwt(time.time() + 3600, "first")
    path.write_text(first)
    settings = _settings(oidc_token=f"file:{path}", credentials_ttl=3600)
    provider = CredentialProvider(settings, identity=token_source(settings))
    used = provider.refresh()
    options = provider.connect_options()
    assert options == {"token": first, "inbox_prefix": inbox_prefix(first)}
    assert not provider.needs_new_connection(used)
    second = _jwt(time.time() + 3600, "second")
    path.write_text(second)
    assert provider.stale()  # an hour left, credentials_ttl an hour: read again anyway (the next connect)
    assert asyncio.run(provider.refresh_async()).token == Secret(second)
    assert provider.needs_new_connection(used)  # its inbox prefix changes with it
    assert provider.connect_options() == {"token": second, "inbox_prefix": inbox_prefix(second)}
    expiring = _jwt(time.time() + 20, "expiring")
    path.write_text(expiring)
    provider.refresh()
    assert 0 < provider.refresh_in() <= 20 - 5  # a quarter of its life (at most a minute) before it expires


def test_the_inbox_rule_is_sha256_of_the_exact_token() -> None:
    """What docs/identity.md tells other clients: ``_INBOX.`` + the first 32 hex digits of SHA-256(token)."""
    assert inbox_prefix("abc") == "_INBOX.ba7816bf8f01cfea414140de5dae2223"
    assert inbox_prefix("abc ") != inbox_prefix("abc")  # the exact string presented, not a normalised one


def test_static_tokens_keep_the_default_inbox_and_a_callback() -> None:
    """Only an identity's token gets an inbox of its own: a static token stays a callback (read at every
    reconnect) and changing it needs no new connection."""
    settings = _settings(token="static-one")
    provider = CredentialProvider(settings)
    used = provider.refresh()
    options = provider.connect_options()
    assert callable(options["token"])
    assert "inbox_prefix" not in options
    assert "inbox_prefix" not in auth_options(settings)
    provider.current = resolve_credentials(_settings(token="static-two"))
    assert not provider.needs_new_connection(used)


def test_a_slow_source_is_read_on_a_thread_ahead_of_expiry(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(_jwt(time.time() - 1))
    settings = _settings(oidc_token=f"command:cat {path}")
    provider = CredentialProvider(settings, identity=token_source(settings))
    provider.refresh()
    assert provider.stale()
    fresh = _jwt(time.time() + 3600)
    path.write_text(fresh)

    async def run() -> str:
        found = await provider.refresh_async()
        return found.token.reveal() if found.token else ""

    assert asyncio.run(run()) == fresh
    assert not provider.stale()


def test_identity_settings_without_a_source_fail_at_configure(tmp_path: Path) -> None:
    from databricks_nats.transport.publisher import Publisher
    from databricks_nats.transport.spool import open_spool

    settings = _settings(oidc_token="env:T", spool_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match="needs an identity token source"):
        Publisher(settings, open_spool(settings.spool_path, settings.spool_max_bytes), lambda *a: ("s", b""))
    with pytest.raises(ConfigurationError, match="needs an identity token source"):
        resolve_credentials(settings)


def test_one_off_connections_present_the_identity_token(monkeypatch) -> None:
    token = _jwt(time.time() + 600)
    monkeypatch.setenv("MY_TOKEN", token)
    settings = _settings(oidc_token="env:MY_TOKEN")
    options = auth_options(settings, identity=token_source(settings))
    assert options == {"token": token, "inbox_prefix": inbox_prefix(token)}


def test_doctor_describes_a_databricks_proof_without_its_token() -> None:
    from databricks_nats.doctor import _presented
    from databricks_nats.integrations.identity.databricks import encode_proof

    pat = encode_proof("dbc-1.cloud.databricks.com", "dapi0123456789abcdef")
    assert _presented(pat, None) == (
        "Databricks token of https://dbc-1.cloud.databricks.com (the auth service asks the workspace whose it is)"
    )
    oauth = encode_proof("https://dbc-1.cloud.databricks.com", _jwt(time.time() + 600, "6f1c"))
    shown = _presented(oauth, time.time() + 600)
    assert shown.startswith("OIDC token of 6f1c from ? for ? (Databricks, https://dbc-1.cloud.databricks.com)")
    assert "dapi" not in _presented(pat, None)
