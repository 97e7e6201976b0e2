"""Test helper: a nats-server config (config mode, no operator) that delegates authentication to a callout.

Accounts: ``AUTH`` holds the callout service's user (and is where the server sends ``$SYS.REQ.USER.AUTH``),
``APP`` (JetStream enabled) is where callout users land (their user JWT's ``aud`` is ``"APP"``), ``SYS`` is the
system account. ``auth_users`` bypass the callout: the service's own user plus any ``extra_users``
(``{"user", "password", "account", "permissions"?}``, e.g. an ``audit`` reader in ``APP``).
Keys per the nats-server docs (securing_nats/auth_callout): ``issuer``, ``auth_users``, ``account``, ``xkey``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from databricks_nats.integrations.identity import natsjwt, xkey
from databricks_nats.integrations.identity.config import ServiceConfig
from databricks_nats.integrations.identity.service import AuthService
from databricks_nats.settings import resolve_settings
from databricks_nats.testing import NatsServer
from databricks_nats.values import Secret

__all__ = ["AUDIENCE", "POLICY", "Callout", "callout_config", "serve_callout"]

AUDIENCE = "nats-auth"  # what the loopback issuer's tokens carry and the service accepts
# The end-to-end policy: a deny rule, a team publishing to ws1/dev (OIDC), AWS trainers, readers.
POLICY = """
prefix = "dbx"
max_ttl = "1h"

[[rules]]
name = "blocked"
effect = "deny"
when = { subject = "svc-blocked" }

[[rules]]
name = "team-a-dev"
when = { subject = "svc-team-a", groups = "team-a" }
workspace = "ws1"
env = "dev"
publish = ["{prefix}.{workspace}.{env}.mlflow.>", "{prefix}.{workspace}.{env}.spark.>"]
jetstream = "publisher"

[[rules]]
name = "aws-trainers"
when = { kind = "aws_iam", role_arn = "arn:aws:iam::123456789012:role/databricks-*" }
workspace = "ws1"
env = "dev"
publish = ["{prefix}.{workspace}.{env}.mlflow.>"]
jetstream = "publisher"

[[rules]]
name = "readers"
when = { groups = "readers" }
workspace = "ws1"
env = "dev"
subscribe = ["{prefix}.{workspace}.{env}.>"]
jetstream = "consumer"
"""


def _user(entry: dict[str, object]) -> str:
    fields = {"user": entry["user"], "password": entry["password"]}
    if entry.get("permissions"):
        fields["permissions"] = entry["permissions"]
    return json.dumps(fields)  # JSON is valid nats-server config syntax


def callout_config(
    path: str | os.PathLike[str],
    *,
    issuer_public: str,
    auth_user: str,
    auth_password: str,
    xkey_public: str | None = None,
    extra_users: Iterable[dict[str, object]] = (),
) -> str:
    """Write the config to ``path`` and return the path (a string)."""
    extra = [dict(u) for u in extra_users]
    users: dict[str, list[str]] = {
        "AUTH": [_user({"user": auth_user, "password": auth_password})],
        "APP": [],
        "SYS": [],
    }
    for entry in extra:
        users.setdefault(str(entry.get("account", "AUTH")), []).append(_user(entry))
    auth_users = [auth_user, *(str(u["user"]) for u in extra)]

    def account(name: str, options: str = "") -> str:
        return f"  {name}: {{ {options}users: [ {', '.join(users[name])} ] }}"

    callout = [
        f"    issuer: {json.dumps(issuer_public)}",
        f"    auth_users: {json.dumps(auth_users)}",
        "    account: AUTH",
    ]
    if xkey_public:
        callout.append(f"    xkey: {json.dumps(xkey_public)}")
    text = "\n".join(
        [
            "accounts {",
            account("AUTH"),
            account("APP", "jetstream: enabled, "),
            account("SYS"),
            "}",
            "system_account: SYS",
            "authorization {",
            "  auth_callout {",
            *callout,
            "  }",
            "}",
            "",
        ]
    )
    with open(path, "w") as f:
        f.write(text)
    return os.fspath(path)


@dataclass
class Callout:
    """A running callout stack: the server, the service, the policy file, the admin's URL (APP, no callout)."""

    server: NatsServer
    service: AuthService
    policy_path: Path
    admin_url: str


@contextlib.contextmanager
def serve_callout(
    tmp: Path, policy: str, *, verifiers: dict[str, Any] | None = None, **config: Any
) -> Iterator[Callout]:
    """A real nats-server whose encrypted ``auth_callout`` points at a running ``AuthService``.

    ``config``: more ``ServiceConfig`` fields (``oidc``, ``databricks``, ``aws_sts_endpoint``…); ``verifiers``:
    ``AuthService`` keyword arguments (a verifier built with test-friendly timings). Users in APP that bypass the
    callout: ``audit`` (the service's audit publisher, into ``platform``/``prod``) and ``admin`` (the test's own).
    """
    issuer_seed, issuer_public = natsjwt.new_account_key()
    xkey_seed, xkey_public = xkey.new_xkey()
    server_config = callout_config(
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
    policy_path = tmp / "policy.toml"
    policy_path.write_text(policy)
    with NatsServer(config=server_config) as server:
        admin_url = server.url.replace("nats://", "nats://admin:admin-pw@")
        audit = resolve_settings(
            environ={},
            spark_conf={},
            url=server.url.replace("nats://", "nats://audit:audit-pw@"),
            workspace="platform",
            env="prod",
            spool_dir=str(tmp / "audit-spool"),
        )
        service_config = ServiceConfig(
            nats=resolve_settings(environ={}, spark_conf={}, url=server.url, user="auth", password="auth-pw"),
            account="APP",
            issuer_seed=Secret(issuer_seed),
            xkey_seed=Secret(xkey_seed),
            policy=str(policy_path),
            audit=audit,
            **config,
        )
        service = AuthService(service_config, **(verifiers or {}))
        with service.running():
            yield Callout(server, service, policy_path, admin_url)
