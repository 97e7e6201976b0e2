"""The zero-code entry point: an MLflow run context provider that installs the hook when configured.

MLflow instantiates this class while ``import mlflow`` is still running, so the module imports nothing
from MLflow or NATS and ``__init__`` does nothing. The hook is installed at the first ``in_context()``
call (MLflow asks every provider before each fluent ``start_run``), and only when ``DATABRICKS_NATS_URL``
is set and ``DATABRICKS_NATS_DISABLED`` is not. Any failure is logged once; MLflow is never disturbed.
"""

from __future__ import annotations

import logging
import os

__all__ = ["NatsRunContextProvider"]

log = logging.getLogger("databricks_nats")


class NatsRunContextProvider:
    """Installs the databricks-nats MLflow hook on first use; contributes no tags."""

    _tried = False

    def in_context(self) -> bool:
        if not NatsRunContextProvider._tried:
            NatsRunContextProvider._tried = True
            if os.environ.get("DATABRICKS_NATS_URL") and os.environ.get("DATABRICKS_NATS_DISABLED", "").lower() not in (
                "1",
                "true",
                "yes",
                "on",
            ):
                try:
                    from databricks_nats.integrations.mlflow import install

                    install()
                except Exception as e:  # noqa: BLE001 - never break MLflow
                    log.warning("databricks-nats: MLflow hook not installed: %s: %s", type(e).__name__, e)
        return False

    def tags(self) -> dict[str, str]:
        return {}
