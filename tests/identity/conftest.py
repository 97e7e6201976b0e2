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

from databricks_nats.integrations.identity.oidc import OidcIssuer, OidcVerifier
from databricks_nats.integrations.identity.service import AuthService
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.testing import NatsServer
from tests.identity.callout_server import AUDIENCE, POLICY, serve_callout
from tests.identity.oidc_issuer import OidcIssuerStub
from tests.identity.sts_stub import StsStub

AWS_AUDIENCE = "nats-test-cluster"
AWS_KEY, AWS_SECRET, AWS_TOKEN = "ASIATESTTRAINER00001", "trainer-secret-key-0000000000000000000000", "session-tok"
AWS_ARN = "arn:aws:sts::123456789012:assumed-role/databricks-trainer/i-0abc"


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
    sts = StsStub({AWS_KEY: (AWS_SECRET, AWS_TOKEN, AWS_ARN, "123456789012", "AROATEST:i-0abc")})
    with OidcIssuerStub() as issuer, sts:
        oidc = (OidcIssuer(issuer=issuer.url, audiences=(AUDIENCE,)),)
        # No wait between JWKS refreshes here (the flood limit is tested in test_oidc): the rotation test
        # runs seconds after the service warmed its cache.
        verifier = OidcVerifier(oidc, min_refresh_interval=0.0)
        with serve_callout(
            tmp,
            POLICY,
            verifiers={"oidc": verifier},
            oidc=oidc,
            aws_sts_endpoint=sts.url,
            aws_audience=AWS_AUDIENCE,
        ) as served:
            yield Stack(served.server, issuer, sts, served.service, served.policy_path, tmp, served.admin_url)
