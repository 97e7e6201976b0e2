"""The auth-callout stack for the end-to-end tests: a real nats-server whose ``auth_callout`` points at our
service (encrypted with an xkey), a loopback OIDC issuer, a loopback STS, a policy file in a temp dir.

Accounts (``callout_server.callout_config``): ``AUTH`` (the service's user), ``APP`` (JetStream; where the
users the service issues land, plus ``audit`` and ``admin``, which bypass the callout: the audit publisher and
the test's own reader).
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from databricks_nats.integrations.identity import natsjwt, xkey
from databricks_nats.integrations.identity.config import ServiceConfig
from databricks_nats.integrations.identity.oidc import OidcIssuer, OidcVerifier
from databricks_nats.integrations.identity.service import AuthService
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.testing import NatsServer
from databricks_nats.values import Secret
from tests.identity.callout_server import callout_config
from tests.identity.oidc_issuer import OidcIssuerStub
from tests.identity.sts_stub import StsStub

AUDIENCE = "nats-auth"
AWS_AUDIENCE = "nats-test-cluster"
AWS_KEY, AWS_SECRET, AWS_TOKEN = "ASIATESTTRAINER00001", "trainer-secret-key-0000000000000000000000", "session-tok"
AWS_ARN = "arn:aws:sts::123456789012:assumed-role/databricks-trainer/i-0abc"

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


@dataclass
class Stack:
    server: NatsServer
    issuer: OidcIssuerStub
    sts: StsStub
    service: AuthService
    policy_path: Path
    tmp: Path
    admin_url: str
    tokens: list[str] = field(default_factory=list)  # every token minted: none may appear in a log or event

    def mint(self, sub: str = "svc-team-a", groups: tuple[str, ...] = ("team-a",), **kw: Any) -> str:
        token = self.issuer.mint(sub=sub, aud=kw.pop("aud", AUDIENCE), extra_claims={"groups": list(groups)}, **kw)
        self.tokens.append(token)
        return token

    def settings(self, **kw: Any) -> Settings:
        base: dict[str, Any] = {
            "url": self.server.url,
            "workspace": "ws1",
            "env": "dev",
            "spool_dir": str(self.tmp / f"spool-{uuid.uuid4().hex[:6]}"),
            "ack_timeout": 2.0,
            "auto_create_stream": False,  # provisioned by the platform (admin), as the docs say
        }
        return resolve_settings(environ={}, spark_conf={}, **{**base, **kw})

    def write_policy(self, text: str) -> None:
        tmp = self.policy_path.with_suffix(".new")
        tmp.write_text(textwrap.dedent(text))
        tmp.replace(self.policy_path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("callout")
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
    with NatsServer(config=config) as server, OidcIssuerStub() as issuer:
        sts = StsStub({AWS_KEY: (AWS_SECRET, AWS_TOKEN, AWS_ARN, "123456789012", "AROATEST:i-0abc")})
        with sts:
            admin_url = server.url.replace("nats://", "nats://admin:admin-pw@")
            service_config = ServiceConfig(
                nats=resolve_settings(environ={}, spark_conf={}, url=server.url, user="auth", password="auth-pw"),
                account="APP",
                issuer_seed=Secret(issuer_seed),
                xkey_seed=Secret(xkey_seed),
                policy=str(policy),
                oidc=(OidcIssuer(issuer=issuer.url, audiences=(AUDIENCE,)),),
                aws_sts_endpoint=sts.url,
                aws_audience=AWS_AUDIENCE,
                audit=resolve_settings(
                    environ={},
                    spark_conf={},
                    url=admin_url.replace("admin:admin-pw", "audit:audit-pw"),
                    workspace="platform",
                    env="prod",
                    spool_dir=str(tmp / "audit-spool"),
                ),
            )
            # No wait between JWKS refreshes here (the flood limit is tested in test_oidc): the rotation test
            # runs seconds after the service warmed its cache.
            oidc = OidcVerifier(service_config.oidc, min_refresh_interval=0.0)
            service = AuthService(service_config, oidc=oidc)
            with service.running():
                yield Stack(server, issuer, sts, service, policy, tmp, admin_url)
