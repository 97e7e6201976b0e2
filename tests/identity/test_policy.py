"""The policy file: identity → NATS permissions, first match wins, deny by default, refused at load when unsafe.

The unit half loads TOML and YAML policies and checks decisions for OIDC and AWS identities (claims, globs,
lists, dotted paths, env expansion, injection attempts, the shipped example). The wire half proves the
JetStream profiles on a real nats-server: users carrying exactly the permissions a decision grants run our
publisher (delivered and acked), our consumer (durable ``subscribe`` and the reader's ranged reads) and the
admin's stream provisioning; and each is refused what its role does not need.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from databricks_nats import _api
from databricks_nats.consumer import subscribe
from databricks_nats.errors import ConfigurationError, WaitTimeout
from databricks_nats.integrations.identity.identity import Identity
from databricks_nats.integrations.identity.policy import USER_INFO, Decision, Permissions, Policy
from databricks_nats.model.events import new_event
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.testing import NatsServer
from databricks_nats.transport import reader

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.toml"
OKTA = "https://example.okta.com/oauth2/default"
ENTRA = "https://login.microsoftonline.com/0a1b2c3d-1111-2222-3333-444455556666/v2.0"
TENANT = "0a1b2c3d-1111-2222-3333-444455556666"
DATABRICKS = "https://dbc-a1b2c3d4-e5f6.cloud.databricks.com/oidc"
WS = "1234567890123456"


def oidc(issuer: str = OKTA, sub: str = "u1", **claims: Any) -> Identity:
    return Identity("oidc", issuer, sub, None, {"iss": issuer, "sub": sub, **claims})


def aws(role: str, account: str = "123456789012") -> Identity:
    arn = f"arn:aws:sts::{account}:assumed-role/{role}/i-0abc"
    claims = {"account": account, "arn": arn, "role_arn": f"arn:aws:iam::{account}:role/{role}", "user_id": "AROA:i"}
    return Identity("aws_iam", "sts.amazonaws.com", arn, None, claims)


def policy(*rules: dict[str, Any], **top: Any) -> Policy:
    return Policy.from_dict({"workspace": "ws1", **top, "rules": list(rules)}, "test.toml")


def subjects(decision: Decision) -> set[str]:
    p = decision.permissions
    assert p is not None, decision
    return {*p.pub_allow, *p.pub_deny, *p.sub_allow, *p.sub_deny}


# ---- loading and deciding ----------------------------------------------------------------------------------------

TOML = """
prefix = "dbx"
workspace = "ws1"
max_ttl = "30m"

[[rules]]
name = "admins"
when = { groups = "platform-admins" }
env = ["dev", "prod"]
publish = ["{prefix}.{workspace}.{env}.>"]
jetstream = "admin"

[[rules]]
name = "dev-publishers"
env = "dev"
publish = ["{prefix}.{workspace}.{env}.mlflow.>"]
jetstream = "publisher"
max_ttl = "2h"
[rules.when]
issuer = "https://example.okta.com/*"
groups = ["team-a", "team-b"]
"""

YAML = """
prefix: dbx
workspace: ws1
max_ttl: 1800
rules:
  - name: admins
    when: {groups: platform-admins}
    env: [dev, prod]
    publish: ["{prefix}.{workspace}.{env}.>"]
    jetstream: admin
  - name: dev-publishers
    when:
      issuer: "https://example.okta.com/*"
      groups: [team-a, team-b]
    env: dev
    publish: ["{prefix}.{workspace}.{env}.mlflow.>"]
    jetstream: publisher
    max_ttl: 2h
"""


def test_toml_and_yaml_policies_give_the_same_decisions(tmp_path: Path) -> None:
    """The same policy written in TOML and in YAML decides alike; the policy's max_ttl caps a rule's."""
    (tmp_path / "p.toml").write_text(TOML)
    (tmp_path / "p.yaml").write_text(YAML)
    loaded = [Policy.load(tmp_path / "p.toml"), Policy.load(str(tmp_path / "p.yaml"))]
    for who in (oidc(groups=["team-b"]), oidc(groups="platform-admins"), oidc(groups=["ops"]), aws("x")):
        assert loaded[0].decide(who) == loaded[1].decide(who)
    d = loaded[0].decide(oidc(groups=["x", "team-b"]))
    assert (d.allowed, d.rule, d.reason, d.ttl) == (True, "dev-publishers", "rule dev-publishers", 1800.0)
    assert d.permissions is not None
    assert "dbx.ws1.dev.mlflow.>" in d.permissions.pub_allow
    assert loaded[0].max_ttl == 1800.0


def test_yaml_without_pyyaml_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p.yml").write_text(YAML)
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(ConfigurationError, match="pip install pyyaml"):
        Policy.load(tmp_path / "p.yml")


def test_first_match_wins_and_no_match_is_refused() -> None:
    p = policy(
        {"name": "narrow", "when": {"groups": "team-a"}, "env": "dev", "publish": ["{prefix}.{workspace}.{env}.a.>"]},
        {"name": "broad", "when": {"issuer": OKTA}, "env": "dev", "subscribe": ["{prefix}.{workspace}.{env}.>"]},
    )
    assert p.decide(oidc(groups=["team-a"])).rule == "narrow"
    assert p.decide(oidc(groups=["team-c"])).rule == "broad"
    refused = p.decide(oidc(issuer="https://other.example", groups=["team-c", "x"]))
    assert refused == Decision(False, None, None, 0.0, "no rule matches (deny by default)")


def test_an_explicit_deny_rule_refuses_before_later_allows() -> None:
    p = policy(
        {"name": "offboarding", "effect": "deny", "when": {"groups": "offboarding"}},
        {"name": "admins", "when": {"groups": "admins"}, "env": "dev", "publish": ["{prefix}.>"]},
    )
    d = p.decide(oidc(groups=["admins", "offboarding"]))
    assert (d.allowed, d.rule, d.permissions, d.reason) == (False, "offboarding", None, "rule offboarding denies")
    assert p.decide(oidc(groups=["admins"])).allowed


def test_list_claims_match_when_any_element_matches_any_glob() -> None:
    p = policy({"name": "r", "when": {"groups": ["ml-*", "data-scientists"]}, "subscribe": ["dbx.>"]})
    assert p.decide(oidc(groups=["finance", "ml-engineers"])).allowed
    assert p.decide(oidc(groups="data-scientists")).allowed
    assert not p.decide(oidc(groups=["finance", "data-scientists-alumni"])).allowed  # a glob matches whole values
    assert not p.decide(oidc(groups=["ML-engineers"])).allowed  # case-sensitive
    assert not p.decide(oidc(groups=[])).allowed


def test_a_missing_claim_never_matches_even_a_star() -> None:
    p = policy({"name": "r", "when": {"groups": "*"}, "subscribe": ["dbx.>"]})
    assert not p.decide(oidc()).allowed
    assert not p.decide(oidc(groups={"nested": "x"})).allowed  # a table is no value to match
    assert p.decide(oidc(groups="anything")).allowed


def test_aws_role_arn_glob_and_account() -> None:
    p = policy(
        {
            "name": "training",
            "when": {"kind": "aws_iam", "account": 123456789012, "role_arn": "arn:aws:iam::*:role/databricks-train-*"},
            "env": "prod",
            "publish": ["{prefix}.{workspace}.{env}.mlflow.>"],
        }
    )
    assert p.decide(aws("databricks-train-gpu")).rule == "training"
    assert not p.decide(aws("databricks-train-gpu", account="999999999999")).allowed
    assert not p.decide(aws("databricks-serving")).allowed
    # an OIDC token claiming the same values is not an AWS identity
    assert not p.decide(oidc(account="123456789012", role_arn="arn:aws:iam::1:role/databricks-train-x")).allowed


def test_dotted_keys_reach_nested_claims_and_claims_named_with_dots() -> None:
    p = policy(
        {"name": "keycloak", "when": {"realm_access.roles": "nats-publisher"}, "subscribe": ["a"]},
        {"name": "auth0", "when": {"https://example.com/groups": "nats"}, "subscribe": ["b"]},
        {"name": "field", "when": {"claims.subject": "x", "email_verified": True, "workspace_id": 42},
         "subscribe": ["c"]},
    )  # fmt: skip
    assert p.decide(oidc(realm_access={"roles": ["x", "nats-publisher"]})).rule == "keycloak"
    assert not p.decide(oidc(realm_access={"roles": ["x"]})).allowed
    assert not p.decide(oidc(realm_access="nats-publisher")).allowed
    auth0 = Identity("oidc", OKTA, "u1", None, {"https://example.com/groups": ["nats"]})
    assert p.decide(auth0).rule == "auth0"
    assert p.decide(oidc(subject="x", email_verified=True, workspace_id=42)).rule == "field"
    assert not p.decide(oidc(subject="x", email_verified=False, workspace_id=42)).allowed


def test_env_lists_expand_every_subject_and_the_default_stream_per_env() -> None:
    p = policy(
        {
            "name": "r",
            "when": {"any": True},
            "env": ["dev", "staging"],
            "publish": ["{prefix}.{workspace}.{env}.mlflow.>", "{prefix}.{workspace}.{env}.spark.>"],
            "deny_publish": ["{prefix}.{workspace}.{env}.system.>"],
            "jetstream": "publisher",
        }
    )
    perms = p.decide(oidc()).permissions
    assert perms is not None
    assert perms.pub_allow == (
        USER_INFO,
        "dbx.ws1.dev.mlflow.>",
        "dbx.ws1.staging.mlflow.>",
        "dbx.ws1.dev.spark.>",
        "dbx.ws1.staging.spark.>",
        "$JS.API.INFO",
        "$JS.API.STREAM.INFO.DBX_ws1_dev",  # the very names the publisher uses
        "$JS.API.STREAM.INFO.DBX_ws1_staging",
    )
    assert Settings(workspace="ws1", env="staging").stream_name == "DBX_ws1_staging"
    assert perms.pub_deny == ("dbx.ws1.dev.system.>", "dbx.ws1.staging.system.>")
    assert perms.sub_allow == ("_INBOX.>",)  # the client's own inboxes: narrowed per token by the service
    mine = perms.with_inbox("_INBOX.0123abcd")
    assert mine.as_nats() == {
        "pub": {"allow": list(perms.pub_allow), "deny": list(perms.pub_deny)},
        "sub": {"allow": ["_INBOX.0123abcd.>"]},
    }
    assert perms.as_nats()["sub"] == {"allow": ["_INBOX.>"]}  # inbox = "shared": as written


def test_with_inbox_narrows_only_the_shared_inbox_grant() -> None:
    """``_INBOX.>`` (from a profile or listed) becomes the connection's own inboxes; other subjects, deny lists
    and a grant without inboxes stay as they are."""
    p = Policy.from_dict(
        {
            "rules": [
                {
                    "name": "r",
                    "when": {"any": True},
                    "subscribe": ["a.>", "_INBOX.>"],
                    "jetstream": "consumer",
                    "workspace": "ws1",
                    "env": "dev",
                    "deny_subscribe": ["_INBOX.>"],
                }
            ]
        }
    )
    perms = p.decide(oidc()).permissions
    assert perms is not None
    assert perms.sub_allow == ("a.>", "_INBOX.>")  # listed once: the profile's adds nothing new
    narrowed = perms.with_inbox("_INBOX.h")
    assert narrowed.sub_allow == ("a.>", "_INBOX.h.>")
    assert (narrowed.sub_deny, narrowed.pub_allow) == (perms.sub_deny, perms.pub_allow)
    assert Permissions(pub_allow=("a.>",)).with_inbox("_INBOX.h") == Permissions(pub_allow=("a.>",))


def test_an_empty_allow_list_is_written_as_deny_everything() -> None:
    """NATS reads a missing allow list as "everything": a publish-only grant must not subscribe anywhere."""
    assert Permissions(pub_allow=("a.>",)).as_nats() == {"pub": {"allow": ["a.>"]}, "sub": {"deny": [">"]}}
    assert Permissions().as_nats() == {"pub": {"deny": [">"]}, "sub": {"deny": [">"]}}


def test_ttl_is_the_smaller_of_rule_and_policy() -> None:
    p = policy(
        {"name": "short", "when": {"sub": "a"}, "subscribe": ["x"], "max_ttl": "15m"},
        {"name": "long", "when": {"sub": "b"}, "subscribe": ["x"], "max_ttl": 86400},
        {"name": "default", "when": {"sub": "c"}, "subscribe": ["x"]},
        max_ttl="1h30m",
    )
    assert [p.decide(oidc(sub=s)).ttl for s in "abc"] == [900.0, 5400.0, 5400.0]


@pytest.mark.parametrize(
    "where",
    [
        {"env": "prod.>"},
        {"env": "*"},
        {"env": ">"},
        {"env": "dev.prod"},
        {"env": ["dev", "prod >"]},
        {"workspace": "ws1.*"},
        {"workspace": ""},
        {"prefix": "dbx.>"},
        {"prefix": "dbx..x"},
        {"stream": "S.>"},
    ],
)
def test_variable_injection_is_refused_at_load(where: dict[str, Any]) -> None:
    """A variable value that would widen a subject (a dot, a wildcard, a space) stops the load."""
    rule = {"name": "team-a", "when": {"groups": "a"}, "publish": ["{prefix}.{workspace}.{env}.mlflow.>"]}
    for placed in ({**rule, **where}, None):  # in the rule, or in the policy's defaults
        if placed is None:
            data = {"env": "dev", **where, "rules": [{**rule, "jetstream": "publisher"}]}
        else:
            data = {"env": "dev", "workspace": "ws1", "rules": [placed]}
        with pytest.raises(ConfigurationError) as e:
            Policy.from_dict(data, "p.toml")
        assert e.value.setting == "policy"
        assert "p.toml: rule team-a:" in str(e.value)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"when": {"sub": "a"}, "subscribe": ["x"]}, "rule #1: every rule needs a name"),
        ({"name": "r", "subscribe": ["x"]}, "rule r: needs conditions"),
        ({"name": "r", "when": {}, "subscribe": ["x"]}, "write when = { any = true }"),
        ({"name": "r", "when": {"any": True, "sub": "a"}, "subscribe": ["x"]}, "stands alone"),
        ({"name": "r", "when": {"groups": []}, "subscribe": ["x"]}, "condition groups lists no value"),
        ({"name": "r", "when": {"sub": "a"}, "publsh": ["x"]}, "unknown key(s) 'publsh'"),
        ({"name": "r", "when": {"sub": "a"}}, "grants nothing"),
        ({"name": "r", "when": {"sub": "a"}, "effect": "maybe", "subscribe": ["x"]}, "effect must be"),
        ({"name": "r", "when": {"sub": "a"}, "effect": "deny", "publish": ["x"]}, "a deny rule grants nothing"),
        ({"name": "r", "when": {"sub": "a"}, "jetstream": "writer"}, "jetstream must be one of"),
        ({"name": "r", "when": {"sub": "a"}, "publish": ["{tenant}.>"]}, "unknown variable {tenant}"),
        ({"name": "r", "when": {"sub": "a"}, "publish": ["dbx.>.x"]}, "'>' may only be the last token"),
        ({"name": "r", "when": {"sub": "a"}, "publish": ["dbx.a*"]}, "whole tokens"),
        ({"name": "r", "when": {"sub": "a"}, "publish": ["dbx..x"]}, "empty token"),
        ({"name": "r", "when": {"sub": "a"}, "publish": ["{prefix}.{env}.>"]}, "uses {env}: set env"),
        ({"name": "r", "when": {"sub": "a"}, "jetstream": "consumer"}, "set stream, or workspace and env"),
        ({"name": "r", "when": {"sub": "a"}, "subscribe": ["x"], "max_ttl": "soon"}, "max_ttl must be"),
        ({"name": "r", "when": {"sub": "a"}, "subscribe": ["x"], "max_ttl": 0}, "max_ttl must be"),
        ({"name": "r", "when": {"sub": 1.5}, "subscribe": ["x"]}, "condition sub must be"),
    ],
)
def test_load_errors_name_the_file_and_the_rule(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        Policy.from_dict({"rules": [rule]}, "/etc/nats/policy.toml")
    assert e.value.setting == "policy"
    assert "/etc/nats/policy.toml: " in str(e.value)
    assert message in str(e.value)


def test_duplicate_names_and_unknown_top_level_keys_are_refused() -> None:
    same = {"name": "r", "when": {"sub": "a"}, "subscribe": ["x"]}
    with pytest.raises(ConfigurationError, match=r"p\.toml: rule r: the name is used by an earlier rule"):
        Policy.from_dict({"rules": [same, same]}, "p.toml")
    with pytest.raises(ConfigurationError, match=r"unknown key.*'rule'"):
        Policy.from_dict({"rule": [same]}, "p.toml")


def test_a_dev_identity_never_gets_prod_subjects() -> None:
    """However the rules for dev are written, nothing of prod (subjects or streams) reaches a dev identity."""
    p = policy(
        {"name": "dev-pub", "when": {"roles": "pub"}, "env": "dev", "publish": ["{prefix}.{workspace}.{env}.>"],
         "jetstream": "publisher"},
        {"name": "dev-read", "when": {"roles": "read"}, "env": ["dev", "test"], "subscribe": ["{prefix}.*.{env}.>"],
         "jetstream": "consumer"},
        {"name": "dev-admin", "when": {"roles": "admin"}, "env": "dev", "jetstream": "admin"},
        {"name": "prod", "when": {"roles": "prod-pub"}, "env": "prod", "publish": ["{prefix}.{workspace}.{env}.>"]},
    )  # fmt: skip
    for roles in (["pub"], ["read"], ["admin"], ["pub", "prod-pub"], ["admin", "prod-pub"]):
        granted = subjects(p.decide(oidc(roles=roles)))
        assert granted
        assert not [s for s in granted if "prod" in s], (roles, granted)
    assert "dbx.ws1.prod.>" in subjects(p.decide(oidc(roles=["prod-pub"])))


def test_the_example_policy_gives_its_documented_decisions() -> None:
    p = Policy.load(EXAMPLE)
    assert p.max_ttl == 3600.0
    admin = p.decide(oidc(groups=["Everyone", "platform-admins"]))
    assert (admin.rule, admin.ttl) == ("platform-admins", 900.0)
    assert f"$JS.API.STREAM.*.DBX_{WS}_prod" in subjects(admin)
    leaving = p.decide(oidc(groups=["platform-admins", "offboarding"]))
    assert (leaving.allowed, leaving.rule) == (False, "offboarding")

    prod_job = p.decide(oidc(DATABRICKS, "6f1c2b1e-4a7d-4e59-9a0b-3c2d1e0f9a8b", client_id="x"))
    assert prod_job.rule == "team-a-prod-jobs"
    assert prod_job.permissions is not None
    assert set(prod_job.permissions.pub_allow) == {
        USER_INFO, f"dbx.{WS}.prod.mlflow.>", f"dbx.{WS}.prod.spark.>", "$JS.API.INFO",
        f"$JS.API.STREAM.INFO.DBX_{WS}_prod",
    }  # fmt: skip
    assert prod_job.permissions.sub_allow == ("_INBOX.>",)
    assert prod_job.permissions.with_inbox("_INBOX.h").sub_allow == ("_INBOX.h.>",)
    assert p.decide(aws("databricks-team-a-prod-gpu")).rule == "team-a-prod-instance-profile"
    assert not p.decide(aws("databricks-team-a-prod-gpu", account="210987654321")).allowed

    dev = p.decide(oidc(ENTRA, "spn-oid", tid=TENANT, roles=["NATS.Publish.TeamA"], azp="app"))
    assert dev.rule == "team-a-nonprod"
    assert not [s for s in subjects(dev) if "prod" in s]
    assert not p.decide(oidc(ENTRA, "spn-oid", tid="another-tenant", roles=["NATS.Publish.TeamA"])).allowed
    team_b = p.decide(oidc(ENTRA, "spn-b", roles=["NATS.Publish.TeamB"]))
    assert team_b.permissions is not None
    assert f"dbx.{WS}.dev.system.>" in team_b.permissions.pub_deny

    airflow = p.decide(oidc(sub="0oa8airflowbridge", cid="0oa8airflowbridge", scp=["nats.consume"]))
    assert airflow.rule == "airflow-bridge"
    assert airflow.permissions is not None
    assert not [s for s in airflow.permissions.pub_allow if s.startswith("dbx.")]  # a bridge never publishes
    assert p.decide(oidc(DATABRICKS, "0d9e8f7a-1b2c-4d3e-8f9a-0b1c2d3e4f5a")).rule == "prefect-bridge"
    reader_ = p.decide(oidc(groups=["ml-engineers"]))
    assert (reader_.rule, reader_.ttl) == ("readers", 3600.0)

    other_workspace = "https://dbc-other.cloud.databricks.com/oidc"
    for stranger in (oidc(groups=["sales"]), aws("some-other-role"), oidc(other_workspace)):
        assert p.decide(stranger).reason == "no rule matches (deny by default)"


# ---- the profiles on a real nats-server --------------------------------------------------------------------------

N = 12


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[NatsServer, Policy, str]]:
    """A nats-server whose users carry exactly what the policy decides for four identities."""
    ws = f"ws{uuid.uuid4().hex[:8]}"
    namespace = "{prefix}.{workspace}.{env}"
    p = policy(
        {"name": "admin", "when": {"roles": "admin"}, "env": ["dev", "prod"], "jetstream": "admin"},
        {"name": "pub", "when": {"roles": "pub"}, "env": "dev", "publish": [f"{namespace}.mlflow.>"],
         "jetstream": "publisher"},
        {"name": "cons", "when": {"roles": "cons"}, "env": "dev", "jetstream": "consumer"},
        {"name": "core", "when": {"roles": "core"}, "env": "dev", "publish": [f"{namespace}.>"]},
        workspace=ws,
    )  # fmt: skip
    users = []
    for role in ("admin", "pub", "cons", "core"):
        perms = p.decide(oidc(roles=[role])).permissions
        assert perms is not None
        nats_perms = perms.as_nats()
        users.append({"user": role, "password": f"{role}-pw", "permissions": {
            "publish": nats_perms["pub"], "subscribe": nats_perms["sub"]}})  # fmt: skip
    (tmp_path / "server.conf").write_text("authorization " + json.dumps({"users": users}))
    srv = NatsServer(config=str(tmp_path / "server.conf")).start()
    try:
        yield srv, p, ws
    finally:
        srv.close()


def as_user(srv: NatsServer, ws: str, role: str, tmp_path: Path, env: str = "dev", **kw: Any) -> Settings:
    return resolve_settings(
        environ={}, spark_conf={}, url=srv.url, workspace=ws, env=env, user=role, password=f"{role}-pw",
        spool_dir=str(tmp_path / f"spool-{role}-{env}"), ack_timeout=1.0, **kw,
    )  # fmt: skip


def publish(settings: Settings, n: int = N) -> dict[str, Any]:
    pub = _api.build_transport(settings)
    try:
        for i in range(n):
            pub.emit(new_event("mlflow.run.metrics", {"experiment_id": "1", "run_id": "r", "metrics": {"i": i}}))
        pub.flush(10 if n else 1)
        return pub.stats()
    finally:
        pub.close(0)


async def refused(settings: Settings, action: str) -> bool:
    """True when the server refuses ``action`` (a JetStream API call or a subscription) to this user."""
    violations: list[str] = []

    async def on_error(e: Exception) -> None:
        violations.append(str(e))

    nc = await nats.connect(
        list(settings.url), user=settings.user, password=settings.password.reveal(), error_cb=on_error,  # type: ignore[union-attr]
        allow_reconnect=False,
    )  # fmt: skip
    js = nc.jetstream(timeout=1.0)
    try:
        if action == "subscribe":
            await nc.subscribe(f"{settings.namespace}.>")
            await nc.flush()
        elif action == "read":
            await js.add_consumer(settings.stream_name, deliver_policy="all")
        elif action == "delete stream":
            await js.delete_stream(settings.stream_name)
        elif action == "create stream":
            await js.add_stream(name=f"X{uuid.uuid4().hex[:6]}", subjects=[f"{settings.namespace}.x.>"])
        await asyncio.sleep(0.2)  # the server's -ERR for a refused subscription arrives asynchronously
    except Exception as e:  # a refused API request times out (the server drops it)
        violations.append(f"raised {type(e).__name__}")
    finally:
        await nc.close()
    return any("permissions violation" in v.lower() for v in violations)


async def doctor_view(settings: Settings) -> dict[str, Any]:
    """What ``databricks-nats doctor`` asks: JetStream's account info, then the user's own permissions."""
    nc = await nats.connect(list(settings.url), user=settings.user, password=settings.password.reveal())  # type: ignore[union-attr]
    try:
        await nc.jetstream(timeout=2).account_info()
        reply = await nc.request(USER_INFO, b"", timeout=2)
        return json.loads(reply.data)["data"]  # type: ignore[no-any-return]
    finally:
        await nc.close()


def test_profiles_are_enough_for_our_publisher_consumer_and_admin_and_no_more(
    server: tuple[NatsServer, Policy, str], tmp_path: Path
) -> None:
    srv, _, ws = server
    admin = as_user(srv, ws, "admin", tmp_path)
    for env in ("dev", "prod"):  # the admin provisions the streams (the publisher may not)
        report = _api.ensure_stream(url=srv.url, workspace=ws, env=env, user="admin", password="admin-pw")
        assert report.action == "created"

    # The publisher delivers with acks, and checks the stream at connect, without a single error.
    stats = publish(as_user(srv, ws, "pub", tmp_path))
    assert stats["acked"] == N, stats
    assert stats["pending"] == 0, stats
    assert not stats["errors"], stats
    # A dev publisher reaches nothing of prod: refused, counted, never raised.
    prod = publish(as_user(srv, ws, "pub", tmp_path, env="prod"))
    assert prod["acked"] == 0, prod
    assert prod["dropped"]["permission_denied"] == N, prod
    pub = as_user(srv, ws, "pub", tmp_path)
    for action in ("subscribe", "read", "delete stream", "create stream"):
        assert asyncio.run(refused(pub, action)), action

    # The consumer reads with a durable consumer (the Airflow / Prefect path), resumes it, and reads ranges.
    cons = as_user(srv, ws, "cons", tmp_path)
    sub = subscribe("mlflow.run.metrics", durable="bridge", start="all", **_kw(cons))
    got = [sub.next(10).data["metrics"]["i"] for _ in range(N)]
    sub.close()  # the last one was not acknowledged: handed back
    assert got == list(range(N))
    # resumed with another start (an Airflow trigger restarted with new arguments): the existing durable is read
    # back (consumer info) and continues where it stopped
    again = subscribe("mlflow.run.metrics", durable="bridge", start="new", **_kw(cons))
    assert again.next(10).data["metrics"]["i"] == N - 1
    with pytest.raises(WaitTimeout):
        again.next(1)
    again.close()
    assert asyncio.run(read_all(cons)) == N
    assert asyncio.run(consumers(admin)) == ["bridge"]  # the reader deleted its ephemeral consumer
    # ...and may not publish events, touch the stream, or read prod.
    stats = publish(cons, 3)
    assert stats["acked"] == 0, stats
    assert stats["dropped"]["permission_denied"] == 3, stats
    for action in ("delete stream", "create stream", "subscribe"):
        assert asyncio.run(refused(cons, action)), action
    assert asyncio.run(refused(as_user(srv, ws, "cons", tmp_path, env="prod"), "read"))
    assert asyncio.run(read_all(admin)) == N  # the admin reads too; prod stays empty
    assert asyncio.run(read_all(as_user(srv, ws, "admin", tmp_path, env="prod"))) == 0

    # A core-only publisher got no allow list for subscriptions: it may subscribe to nothing.
    assert asyncio.run(refused(as_user(srv, ws, "core", tmp_path), "subscribe"))
    # Every user may ask the server what it was given (what `databricks-nats doctor` shows).
    for role in ("pub", "cons", "admin"):
        info = asyncio.run(doctor_view(as_user(srv, ws, role, tmp_path)))
        assert info["user"] == role
        assert USER_INFO in info["permissions"]["publish"]["allow"]
    assert f"dbx.{ws}.dev.mlflow.>" in asyncio.run(doctor_view(pub))["permissions"]["publish"]["allow"]


def _kw(settings: Settings) -> dict[str, Any]:
    return {
        "url": settings.url[0], "workspace": settings.workspace, "env": settings.env, "user": settings.user,
        "password": settings.password.reveal(),  # type: ignore[union-attr]
    }  # fmt: skip


async def read_all(settings: Settings) -> int:
    """The stored messages, read as ``read_events`` does: stream info, an ephemeral consumer, then its deletion."""
    nc = await reader.connect(settings, "policy-test")
    try:
        js = nc.jetstream(timeout=2.0)
        lo, hi = await reader.bounds(js, settings.stream_name)
        if hi < max(lo, 1):  # an empty stream
            return 0
        return len([m async for m in reader.read_range(js, settings.stream_name, [], lo, hi)])
    finally:
        await nc.close()


async def consumers(settings: Settings) -> list[str]:
    nc = await reader.connect(settings, "policy-test")
    try:
        return sorted(c.name for c in await nc.jetstream(timeout=2.0).consumers_info(settings.stream_name))
    finally:
        await nc.close()
