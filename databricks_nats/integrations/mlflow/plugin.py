"""The zero-code entry point: an MLflow run context provider that installs the hook when configured.

MLflow instantiates this class while ``import mlflow`` is still running (entry point group
``mlflow.run_context_provider``). If this process is configured to publish (``DATABRICKS_NATS_URL`` is
set, or a settings file is found: ``DATABRICKS_NATS_CONFIG``, the job parameter ``nats_config``,
``./databricks-nats.toml``, ``~/.config/databricks-nats/config.toml``) and not ``disabled``, the hook is
installed right there, deferred: MLflow's store registries are hooked at once (so every use of MLflow in
the process is seen — fluent or ``MlflowClient``, tracking or registry only), while the hook itself and
its settings are built when MLflow first hands out a store. Unconfigured, this costs a few ``os``
calls. Any failure is logged once; MLflow is never disturbed.
"""

from __future__ import annotations

import logging
import os

__all__ = ["NatsRunContextProvider", "activate"]

log = logging.getLogger("databricks_nats")
_tried = False


def _configured() -> bool:
    """Whether this process is configured to publish, decided cheaply (no settings resolved yet)."""
    if os.environ.get("DATABRICKS_NATS_URL"):
        return True
    from databricks_nats.settings import settings_file

    return settings_file() is not None


def activate() -> bool:
    """Install the hook (deferred) once per process when configured; return whether it is installed."""
    global _tried
    if _tried:
        from databricks_nats.integrations.mlflow import installed

        return installed()
    _tried = True
    try:
        if not _configured():
            return False
        from databricks_nats.settings import resolve_settings

        if resolve_settings(spark_conf={}).disabled:
            return False
        from databricks_nats.integrations.mlflow import install_deferred

        install_deferred()
        return True
    except Exception as e:  # noqa: BLE001 - never break MLflow
        log.warning("databricks-nats: MLflow hook not installed: %s: %s", type(e).__name__, e)
        return False


class NatsRunContextProvider:
    """Installs the databricks-nats MLflow hook when MLflow loads its plugins; contributes no tags."""

    def __init__(self) -> None:
        import databricks_nats._exit  # noqa: F401 - our exit flush is registered before MLflow's end-run handler

        activate()

    def in_context(self) -> bool:
        return False

    def tags(self) -> dict[str, str]:
        return {}
