"""The shipped deployment files agree with the code and with each other.

``deploy/auth-service/auth-service.toml`` is what an operator copies: it must load with ``ServiceConfig.load``
once the files it names exist (keys made here, the example policy), and mean what its comments say. The
systemd unit, the Dockerfile and ``docs/identity.md`` must name one config path, and the command they run must
be one the CLI accepts. ``examples/policy.toml`` (its decisions are test_policy's) must let the bundle's prod
job in whichever way its Databricks token is verified, and its comments name only settings that exist.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
from pathlib import Path

from databricks_nats.cli import build_parser
from databricks_nats.integrations.identity import natsjwt, xkey
from databricks_nats.integrations.identity.config import ServiceConfig
from databricks_nats.integrations.identity.identity import Identity
from databricks_nats.integrations.identity.policy import Policy
from databricks_nats.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "auth-service"
CONFIG_PATH = "/etc/databricks-nats/auth-service.toml"


def _installed_example(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The example config with /etc/databricks-nats and /var/lib/... moved into ``tmp_path``, and the files
    it names written there: fresh keys, passwords, the example policy."""
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    issuer_seed, _ = natsjwt.new_account_key()
    xkey_seed, _ = xkey.new_xkey()
    files = {
        "issuer.nk": issuer_seed,
        "xkey.nk": xkey_seed,
        "auth-password": "auth-pa55",
        "audit-password": "audit-pa55",
    }
    for name, value in files.items():
        (etc / name).write_text(value + "\n")
    shutil.copy(ROOT / "examples" / "policy.toml", etc / "policy.toml")
    text = (DEPLOY / "auth-service.toml").read_text()
    text = text.replace("/etc/databricks-nats/", f"{etc}/").replace("/var/lib/databricks-nats-auth/", f"{state}/")
    config = etc / "auth-service.toml"
    config.write_text(text)
    return config, files


def test_the_example_service_config_loads_with_the_files_it_names(tmp_path: Path) -> None:
    """Every key of the example is one ServiceConfig reads: keys and the policy come from the files it names,
    the three documented OIDC issuers are trusted, AWS IAM is bound to its audience, audits go to a namespace."""
    path, files = _installed_example(tmp_path)
    config = ServiceConfig.load(str(path))
    assert config.account == "APP"
    assert config.issuer_seed.reveal() == files["issuer.nk"]
    assert config.xkey_seed is not None
    assert config.xkey_seed.reveal() == files["xkey.nk"]
    assert config.policy == str(path.parent / "policy.toml")
    assert config.inbox == "per-token"
    Policy.load(config.policy)  # the policy the example names is a valid one
    issuers = {i.issuer for i in config.oidc}
    assert any(i.startswith("https://login.microsoftonline.com/") and i.endswith("/v2.0") for i in issuers)
    assert any(re.fullmatch(r"https://[a-z0-9-]+\.okta\.com/oauth2/\w+", i) for i in issuers)
    assert any(i.endswith(".cloud.databricks.com/oidc") for i in issuers)
    assert config.aws_sts_endpoint == "https://sts.amazonaws.com"
    assert config.aws_audience == "nats.example.com"
    assert config.nats.user == "auth"
    assert config.audit is not None
    assert (config.audit.user, config.audit.workspace, config.audit.env) == ("audit", "platform", "prod")
    assert config.audit.spool_dir.startswith(str(tmp_path / "state"))


def test_the_unit_the_container_and_the_docs_run_the_same_command_on_the_same_config() -> None:
    """systemd and Docker both run `databricks-nats auth-service --config /etc/databricks-nats/auth-service.toml`,
    a command the CLI parses; the unit runs unprivileged and restarts on failure, the image as a non-root user
    with the auth-service extra; the how-to names the same path."""
    unit = (DEPLOY / "databricks-nats-auth.service").read_text()
    options = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith(("#", ";")))
    exec_start = shlex.split(options["ExecStart"])
    assert Path(exec_start[0]).name == "databricks-nats"
    assert exec_start[1:] == ["auth-service", "--config", CONFIG_PATH]
    assert options["User"] not in ("", "root", "0")
    assert options["Restart"] == "on-failure"
    assert options["NoNewPrivileges"] == "yes"

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M)
    assert entrypoint is not None
    assert json.loads(entrypoint.group(1)) == ["databricks-nats", *exec_start[1:]]
    user = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user
    assert user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^FROM python:3\.12-slim$", dockerfile, re.M)
    assert "[auth-service]" in dockerfile

    args = build_parser().parse_args(exec_start[1:])
    assert args.config == CONFIG_PATH

    assert CONFIG_PATH in (ROOT / "docs" / "identity.md").read_text()
    assert CONFIG_PATH in (DEPLOY / "auth-service.toml").read_text()


def test_the_example_policy_lets_the_bundles_prod_job_in_however_its_databricks_token_is_verified() -> None:
    """The prod job runs as its service principal with ``oidc_token = "databricks"``: on a job cluster or
    serverless the token is the runtime's own (introspected at the workspace: kind "databricks", issuer the
    workspace URL), with OAuth M2M a JWT verified offline (kind "oidc", issuer ``<host>/oidc``). Both are the
    same service principal (its application id) and get the same grant; another workspace's gets nothing."""
    p = Policy.load(ROOT / "examples" / "policy.toml")
    host, app_id = "https://dbc-a1b2c3d4-e5f6.cloud.databricks.com", "6f1c2b1e-4a7d-4e59-9a0b-3c2d1e0f9a8b"
    introspected = Identity("databricks", host, app_id, None, {
        "application_id": app_id, "user_name": app_id, "groups": ["team-a"], "workspace_id": "1234567890123456",
        "host": host})  # fmt: skip
    offline = Identity("oidc", f"{host}/oidc", app_id, None, {"iss": f"{host}/oidc", "sub": app_id})
    decisions = [p.decide(who) for who in (introspected, offline)]
    assert [d.rule for d in decisions] == ["team-a-prod-jobs", "team-a-prod-jobs"]
    assert decisions[0].permissions == decisions[1].permissions
    assert decisions[0].permissions is not None
    assert "dbx.1234567890123456.prod.mlflow.>" in decisions[0].permissions.pub_allow
    bridge = "0d9e8f7a-1b2c-4d3e-8f9a-0b1c2d3e4f5a"
    assert p.decide(Identity("databricks", host, bridge, None, {"application_id": bridge})).rule == "prefect-bridge"
    elsewhere = "https://dbc-other.cloud.databricks.com"
    for stranger in (
        Identity("databricks", elsewhere, app_id, None, {"application_id": app_id}),
        Identity("oidc", f"{elsewhere}/oidc", app_id, None, {"sub": app_id}),
        Identity("aws_iam", host, app_id, None, {}),  # the right names under another kind
    ):
        assert p.decide(stranger).reason == "no rule matches (deny by default)", stranger


def test_the_example_policy_names_only_client_settings_that_exist() -> None:
    """A comment saying ``identity = "oidc"`` sends an operator looking for a setting that does not exist: every
    `name = value` the comments quote is a client setting or a key of the policy file itself."""
    text = (ROOT / "examples" / "policy.toml").read_text()
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    policy_keys = set(re.findall(r"^(\w+) = ", text, re.M)) | {"effect", "when", "any"}
    quoted = set(re.findall(r"`(\w+) = [^`]*`", comments)) | set(re.findall(r"^#\s+(\w+) = ", comments, re.M))
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert {"oidc_token", "aws_iam"} <= quoted
    assert quoted - fields - policy_keys == set()
