"""The client side of identity-bound publishing: where the token presented to the auth service comes from.

``oidc_token`` names one of four sources, each a ``ports.TokenSource``:

- ``env:NAME`` — a variable (read at every connect: a launcher may rotate it);
- ``file:PATH`` — a file re-read at every connect (a Kubernetes projected token, a sidecar's output);
- ``command:CMD`` — a command line (no shell) whose standard output is the token (``az account get-access-token
  --query accessToken -o tsv``, a vault agent); run on a thread, ahead of the token's expiry;
- ``databricks`` — the Databricks SDK's token for the identity it runs as (a job's service principal), with
  its workspace URL, for the auth service to verify with that workspace (``databricks.py``).

``aws_iam`` signs ``sts:GetCallerIdentity`` with the AWS credentials botocore finds (the cluster's instance
profile), bound to ``identity_audience`` (``aws.py``). A token's expiry is read from the token itself (a JWT's
``exp``, unverified: it is our own token) so that a new one is fetched before it runs out.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass

from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.identity.unverified import jwt_expiry
from databricks_nats.ports import IdentityToken, TokenSource
from databricks_nats.settings import Settings
from databricks_nats.values import Secret

__all__ = [
    "AwsIamToken",
    "CommandToken",
    "DatabricksToken",
    "EnvToken",
    "FileToken",
    "token_source",
]

_COMMAND_TIMEOUT = 30.0


def _token(text: str, source: str) -> IdentityToken:
    value = text.strip()
    if not value:
        raise ConfigurationError("oidc_token", f"{source} gave an empty token")
    return IdentityToken(Secret(value), jwt_expiry(value), source)


@dataclass(frozen=True)
class EnvToken:
    name: str
    fast: bool = True

    @property
    def description(self) -> str:
        return f"OIDC token from ${self.name}"

    def token(self) -> IdentityToken:
        value = os.environ.get(self.name)
        if value is None:
            raise ConfigurationError("oidc_token", f"environment variable {self.name} is not set")
        return _token(value, self.description)


@dataclass(frozen=True)
class FileToken:
    path: str
    fast: bool = True

    @property
    def description(self) -> str:
        return f"OIDC token from file {self.path}"

    def token(self) -> IdentityToken:
        try:
            with open(os.path.expanduser(self.path), encoding="utf-8") as f:
                return _token(f.read(), self.description)
        except OSError as e:
            raise ConfigurationError(
                "oidc_token", f"cannot read {self.path}: {e.strerror or type(e).__name__}"
            ) from None


@dataclass(frozen=True)
class CommandToken:
    command: str
    fast: bool = False

    @property
    def description(self) -> str:
        return f"OIDC token from command {shlex.split(self.command)[0]}"

    def token(self) -> IdentityToken:
        try:
            done = subprocess.run(
                shlex.split(self.command), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ConfigurationError("oidc_token", f"{self.description} failed: {type(e).__name__}") from None
        if done.returncode != 0:
            raise ConfigurationError("oidc_token", f"{self.description} exited with {done.returncode}")
        return _token(done.stdout, self.description)


@dataclass(frozen=True)
class DatabricksToken:
    """The Databricks SDK's bearer token, wrapped with its workspace for the auth service to introspect
    (``identity/databricks.py``): ``databricks:`` + base64url(JSON {"host", "token"}). The expiry is the inner
    token's ``exp`` when it is a JWT (an OAuth token), else None (a PAT, the runtime's native token)."""

    timeout: float = 10.0
    fast: bool = False
    description: str = "Databricks token from the Databricks SDK"

    def token(self) -> IdentityToken:
        from databricks_nats.integrations.databricks.sdk import bearer
        from databricks_nats.integrations.identity.databricks import encode_proof

        host, value = bearer(self.timeout)
        inner = _token(value, self.description)
        return IdentityToken(Secret(encode_proof(host, inner.value.reveal())), inner.expires_at, self.description)


@dataclass(frozen=True)
class AwsIamToken:
    audience: str | None = None
    region: str | None = None
    fast: bool = False

    @property
    def description(self) -> str:
        return f"AWS IAM (signed sts:GetCallerIdentity{', ' + self.region if self.region else ''})"

    def token(self) -> IdentityToken:
        from databricks_nats.integrations.identity.aws import sign_identity_request

        proof = sign_identity_request(audience=self.audience, region=self.region)
        return IdentityToken(Secret(proof.token), proof.expires_at, self.description)


def token_source(settings: Settings) -> TokenSource | None:
    """The source ``oidc_token`` / ``aws_iam`` names, or None when neither is set."""
    if settings.aws_iam:
        return AwsIamToken(settings.identity_audience, settings.aws_region)
    locator = settings.oidc_token
    if not locator:
        return None
    if locator == "databricks":
        return DatabricksToken(settings.context_timeout * 5)
    kind, _, rest = locator.partition(":")
    if kind == "env":
        return EnvToken(rest)
    if kind == "file":
        return FileToken(rest)
    return CommandToken(rest)
