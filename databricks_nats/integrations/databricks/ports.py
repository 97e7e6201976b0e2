"""The Databricks implementations of the core's ports (``databricks_nats.ports``), which clients inject as defaults.

``DatabricksSecrets`` reads secret scopes with databricks-sdk; ``DatabricksContextProvider`` detects the
workspace, cluster, notebook and job (``context.py``) and applies the numeric workspace id to the settings.
"""

from __future__ import annotations

from typing import Any

from databricks_nats.integrations.databricks.context import apply_context, as_event_context, detect_context
from databricks_nats.ports import plain_context
from databricks_nats.settings import Settings

__all__ = ["DatabricksContextProvider", "DatabricksSecrets"]


class DatabricksSecrets:
    """A ``SecretSource`` over Databricks secret scopes (databricks-sdk, the process's ``WorkspaceClient``).

    Built where the client is configured: it imports the SDK module then, never on the publisher's worker
    thread at a reconnect. A missing databricks-sdk is reported (ConfigurationError) when a secret is read.
    """

    def __init__(self, timeout: float = 10.0) -> None:
        from databricks_nats.integrations.databricks import sdk

        self._read = sdk.read_secret
        self.timeout = timeout

    def get(self, scope: str, key: str) -> str | None:
        return self._read(scope, key, self.timeout)

    def __repr__(self) -> str:
        return f"DatabricksSecrets(timeout={self.timeout})"


class DatabricksContextProvider:
    """A ``ContextProvider`` that detects the Databricks context; with ``detect_context`` off, the plain one."""

    def __init__(self, *, sdk: bool = True) -> None:
        self.sdk = sdk

    def detect(self, settings: Settings) -> tuple[Settings, dict[str, Any]]:
        if not settings.detect_context:
            return settings, plain_context(settings)
        try:
            found = detect_context(settings, sdk=self.sdk)
            applied = apply_context(settings, found)
            return applied, as_event_context(found, applied)
        except Exception:  # noqa: BLE001 - a provider never raises: an undetected context is the plain one
            return settings, plain_context(settings)

    def __repr__(self) -> str:
        return f"DatabricksContextProvider(sdk={self.sdk})"
