"""``NatsSettings``: a Prefect block holding the NATS settings and credentials of a workspace/env.

    from databricks_nats.prefect import NatsSettings

    NatsSettings(url="nats://nats:4222", workspace="1234", env="prod", user="svc", password="…").save("prod")
    NatsSettings.load("prod").settings()      # keyword settings for configure / subscribe / Client

Register the block type (Prefect's convention for a collection) with
``prefect block register -m databricks_nats.integrations.prefect.blocks``; the forwarder, the bridge, the
runner and the ``publish`` task take ``block="prod"`` (the saved block's name). Credentials are ``SecretStr``
fields: Prefect stores them encrypted and shows them masked; ``settings()`` hands the values to our settings,
whose secrets never appear in a repr or a message either. Fields left empty fall back to the usual
``DATABRICKS_NATS_*`` environment, settings file and defaults.

Prefect is imported when this module is: import it (or the name from ``databricks_nats.prefect``) only where
Prefect is installed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

__all__ = ["NatsSettings"]

_SECRETS = ("password", "token", "creds", "nkey_seed", "tls_key")
_PLAIN = ("url", "workspace", "env", "subject_prefix", "user", "secret_scope", "tls_ca", "tls_cert", "stream")


class NatsSettings(Block):  # type: ignore[misc]  # Prefect is Any for mypy (pyproject)
    """NATS settings and credentials for databricks-nats (publishing, the bridge, the forwarder)."""

    _block_type_name: ClassVar[str] = "Databricks NATS"
    _block_type_slug: ClassVar[str] = "databricks-nats"
    _description: ClassVar[str] = "NATS server, namespace and credentials for databricks-nats."
    _documentation_url: ClassVar[str] = "https://github.com/databricks-nats/databricks-nats/blob/main/docs/prefect.md"

    url: str | None = Field(default=None, description="NATS server URL(s), comma-separated")
    workspace: str | None = Field(default=None, description="Databricks workspace id (the namespace)")
    env: str | None = Field(default=None, description="Environment: dev, staging, prod…")
    subject_prefix: str | None = Field(default=None, description="Subject prefix (default dbx)")
    stream: str | None = Field(default=None, description="JetStream stream name (default derived)")
    user: str | None = Field(default=None, description="NATS user")
    password: SecretStr | None = Field(default=None, description="NATS password")
    token: SecretStr | None = Field(default=None, description="NATS token")
    creds: SecretStr | None = Field(default=None, description="NATS .creds file content")
    nkey_seed: SecretStr | None = Field(default=None, description="NKey seed")
    tls_ca: str | None = Field(default=None, description="CA bundle path")
    tls_cert: str | None = Field(default=None, description="Client certificate path")
    tls_key: SecretStr | None = Field(default=None, description="Client key (path or PEM)")
    secret_scope: str | None = Field(default=None, description="Databricks secret scope with the credentials")

    def settings(self) -> dict[str, Any]:
        """The keyword settings this block sets (for ``configure``, ``subscribe``, ``Client``, the bridge…)."""
        out: dict[str, Any] = {}
        for name in _PLAIN:
            value = getattr(self, name)
            if value not in (None, ""):
                out[name] = value
        for name in _SECRETS:
            value = getattr(self, name)
            if value is not None and value.get_secret_value():
                out[name] = value.get_secret_value()
        return out
