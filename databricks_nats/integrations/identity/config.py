"""The auth-callout service's settings file (TOML), read once at start.

::

    [nats]                 # the service's own connection: a member of the callout's auth_users
    url = "nats://127.0.0.1:4222"
    user = "auth"
    password = "/etc/databricks-nats/auth-password"   # a value, or a file holding it (as for every secret)

    [callout]
    account = "APP"                                    # the account the users it issues belong to
    issuer_seed = "/etc/databricks-nats/issuer.nk"     # the account key the server's auth_callout.issuer names
    xkey_seed = "/etc/databricks-nats/xkey.nk"         # optional: encrypted callout (server's auth_callout.xkey)
    policy = "/etc/databricks-nats/policy.toml"        # re-read when it changes: the next connect uses it
    workers = 8                                        # verifications at once (JWKS and STS are HTTP calls)
    inbox = "per-token"                                # or "shared": see below

    [[oidc]]                                           # one table per trusted issuer
    issuer = "https://<workspace-host>/oidc"
    audiences = ["nats"]

    [[databricks]]                                     # one table per trusted workspace (oidc_token = databricks)
    host = "https://<workspace-host>"                  # tokens are introspected there (SCIM Me): only listed hosts
    workspace_id = "1234567890123456"                  # optional: the workspace_id claim policy rules match on

    [aws]                                              # optional: AWS IAM identities
    sts_endpoint = "https://sts.amazonaws.com"
    audience = "nats.example.com"                      # what clients bind their proof to (identity_audience)

    [audit]                                            # optional: where system.auth.* events go
    url = "nats://127.0.0.1:4222"                      # any databricks-nats settings: a durable publisher
    user = "audit"
    password = "/etc/databricks-nats/audit-password"
    workspace = "platform"
    env = "prod"

A ``[[databricks]]`` workspace accepts what ``oidc_token = "databricks"`` presents whatever the SDK's auth
(a PAT, a job cluster's or serverless' native token, OAuth): the service asks the workspace who the token is.
An OAuth JWT of a workspace whose ``<host>/oidc`` is also an ``[[oidc]]`` issuer is verified offline instead.

``inbox``: a grant of subscribe ``_INBOX.>`` becomes ``_INBOX.<h>.>`` for the token presented (``per-token``,
the default; ``h`` per ``transport.auth.inbox_prefix``), so an identity cannot read another's replies (JetStream
acks and pulled messages). ``shared`` keeps ``_INBOX.>`` for clients that cannot set an inbox prefix: weaker,
every identity may then read every other's replies.

``[nats]`` and ``[audit]`` take the client's settings (``Settings``): URLs, credentials, TLS, spool. Every
problem is a ``ConfigurationError`` naming the file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from databricks_nats.config_file import load
from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.identity.databricks import DatabricksWorkspace
from databricks_nats.integrations.identity.oidc import OidcIssuer
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.values import Secret

__all__ = ["ServiceConfig"]

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
INBOX_MODES = ("per-token", "shared")


def _secret(path: str, key: str, value: Any) -> Secret:
    """A value, or the content of the file it names (a mounted secret)."""
    text = str(value or "").strip()
    if not text:
        raise ConfigurationError(key, f"{path}: {key} is required")
    if "\n" not in text and os.path.isfile(os.path.expanduser(text)):
        with open(os.path.expanduser(text), encoding="utf-8") as f:
            text = f.read().strip()
    return Secret(text)


def _settings(path: str, table: str, values: Any, **defaults: Any) -> Settings:
    if not isinstance(values, Mapping):
        raise ConfigurationError(table, f"{path}: [{table}] must be a table")
    try:
        return resolve_settings(environ={}, spark_conf={}, **{**defaults, **values})
    except ConfigurationError as e:
        raise ConfigurationError(table, f"{path}: {e}") from None


@dataclass(frozen=True, repr=False)
class ServiceConfig:
    """What the service needs; ``load`` reads it from a file, tests and embedders build it directly."""

    nats: Settings
    account: str
    issuer_seed: Secret
    policy: str
    xkey_seed: Secret | None = None
    oidc: tuple[OidcIssuer, ...] = ()
    databricks: tuple[DatabricksWorkspace, ...] = ()
    aws_sts_endpoint: str | None = None
    aws_audience: str | None = None
    audit: Settings | None = None
    workers: int = 8
    audit_per_second: float = 5.0  # per second and key (grant: identity; refusal: reason, host, identity), burst 10
    queue: str = "databricks-nats-auth"  # instances in one queue group share the requests
    inbox: str = "per-token"  # "shared": every identity may subscribe _INBOX.> (clients without an inbox prefix)

    def __post_init__(self) -> None:
        _check_inbox(self.inbox, "ServiceConfig")

    def __repr__(self) -> str:
        return (
            f"ServiceConfig(account={self.account!r}, policy={self.policy!r}, oidc={len(self.oidc)} issuer(s), "
            f"databricks={len(self.databricks)} workspace(s), inbox={self.inbox!r})"
        )

    @classmethod
    def load(cls, path: str) -> ServiceConfig:
        data = load(path)
        callout = data.get("callout")
        if not isinstance(callout, Mapping):
            raise ConfigurationError("callout", f"{path}: a [callout] table is required")
        known = {"account", "issuer_seed", "xkey_seed", "policy", "workers", "audit_per_second", "inbox"}
        unknown = set(callout) - known
        if unknown:
            raise ConfigurationError("callout", f"{path}: unknown key {sorted(unknown)[0]!r} in [callout]")
        for key in ("account", "policy"):
            if not callout.get(key):
                raise ConfigurationError(key, f"{path}: [callout] {key} is required")
        inbox = _check_inbox(callout.get("inbox", "per-token"), f"{path}: [callout]")
        base = os.path.dirname(os.path.abspath(path))
        policy = os.path.join(base, os.path.expanduser(str(callout["policy"])))
        issuers = []
        for i, item in enumerate(data.get("oidc") or []):
            try:
                issuers.append(
                    OidcIssuer(
                        issuer=str(item["issuer"]),
                        audiences=tuple(item.get("audiences") or ()),
                        **{k: item[k] for k in ("algorithms", "discovery_url", "jwks_uri", "leeway") if k in item},
                    )
                )
            except (KeyError, TypeError) as e:
                raise ConfigurationError("oidc", f"{path}: [[oidc]] #{i + 1}: {e}") from None
        workspaces = _workspaces(path, data.get("databricks") or [])
        aws = data.get("aws") or {}
        if not isinstance(aws, Mapping):
            raise ConfigurationError("aws", f"{path}: [aws] must be a table")
        if not issuers and not workspaces and not aws:
            raise ConfigurationError("oidc", f"{path}: trust at least one [[oidc]], [[databricks]] or [aws]")
        return cls(
            nats=_settings(path, "nats", data.get("nats", {}), client_name="databricks-nats-auth"),
            account=str(callout["account"]),
            issuer_seed=_secret(path, "issuer_seed", callout.get("issuer_seed")),
            xkey_seed=_secret(path, "xkey_seed", callout["xkey_seed"]) if callout.get("xkey_seed") else None,
            policy=policy,
            oidc=tuple(issuers),
            databricks=workspaces,
            aws_sts_endpoint=str(aws.get("sts_endpoint") or "https://sts.amazonaws.com") if aws else None,
            aws_audience=str(aws["audience"]) if aws.get("audience") else None,
            audit=_settings(path, "audit", data["audit"], client_name="databricks-nats-audit")
            if "audit" in data
            else None,
            workers=int(callout.get("workers", 8)),
            audit_per_second=float(callout.get("audit_per_second", 5.0)),
            inbox=inbox,
        )


def _check_inbox(value: Any, where: str) -> str:
    if value not in INBOX_MODES:
        problem = 'inbox must be "per-token" (the default) or "shared" (weaker: every identity may read every reply)'
        raise ConfigurationError("inbox", f"{where} {problem}, not {value!r}")
    return str(value)


def _workspaces(path: str, tables: Any) -> tuple[DatabricksWorkspace, ...]:
    """The ``[[databricks]]`` tables: ``host`` and an optional ``workspace_id``."""
    if not isinstance(tables, list):
        raise ConfigurationError("databricks", f"{path}: [[databricks]] must be a list of tables")
    found = []
    for i, item in enumerate(tables):
        where = f"{path}: [[databricks]] #{i + 1}"
        if not isinstance(item, Mapping):
            raise ConfigurationError("databricks", f"{where} must be a table")
        unknown = set(item) - {"host", "workspace_id"}
        if unknown:
            raise ConfigurationError("databricks", f"{where}: unknown key {sorted(unknown)[0]!r}")
        if not item.get("host"):
            raise ConfigurationError("databricks", f"{where}: host is required")
        try:
            found.append(DatabricksWorkspace(host=item["host"], workspace_id=item.get("workspace_id")))
        except ConfigurationError as e:
            raise ConfigurationError(e.setting, f"{where}: {str(e).split(': ', 1)[-1]}") from None
    hosts = [w.host for w in found]
    for host in hosts:
        if hosts.count(host) > 1:
            raise ConfigurationError("databricks", f"{path}: [[databricks]] {host!r} is listed twice")
    return tuple(found)
