"""The MLflow hook: every run, metric, artifact, logged model and registry change becomes an event.

    import databricks_nats
    databricks_nats.autolog()                 # hook + mlflow.autolog(); or install() for the hook alone

Zero-code: with the wheel installed and ``DATABRICKS_NATS_URL`` set, MLflow loads our run context
provider (entry point ``mlflow.run_context_provider``), which installs the hook before the first run.
MLflow imports that provider during ``import mlflow``, through this package: so this module imports
nothing beyond the standard library until a function is called.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from databricks_nats.integrations.mlflow.hook import Hook

__all__ = ["autolog", "current_hook", "install", "installed", "uninstall"]

log = logging.getLogger("databricks_nats")
_lock = threading.Lock()
_hook: Hook | None = None  # kept after uninstall: its runs and metrics state carry over a reinstall
_active = False


def install() -> Hook:
    """Install the store-layer hook (idempotent); return it."""
    global _hook, _active
    import atexit

    from databricks_nats.integrations.mlflow import _compat
    from databricks_nats.integrations.mlflow.hook import Hook

    with _lock:
        if _hook is None:
            _hook = Hook()
            atexit.register(_hook.metrics.flush_all)  # runs before the publisher's exit flush (atexit is LIFO)
        if not _active:
            _hook.reconfigure()
            _compat.install(_hook.wrap_tracking, _hook.wrap_registry, _hook.wrap_artifacts)
            _hook.enabled = _active = True
            log.info("databricks-nats: MLflow hook installed (MLflow %s.%s)", *_compat.mlflow_version())
        return _hook


def uninstall() -> None:
    """Remove the hook: registries are restored and stores and repositories already handed out are unwrapped."""
    global _active
    from databricks_nats.integrations.mlflow import _compat

    with _lock:
        if _hook is None or not _active:
            return
        _hook.metrics.flush_all()
        _hook.enabled = _active = False
        _compat.uninstall()


def installed() -> bool:
    return _active


def current_hook() -> Hook | None:
    """The installed hook, or None (used by ``testing.capture`` to hand its settings over)."""
    return _hook if _active else None


def autolog(*, disable: bool = False, spark: Any = None, **mlflow_autolog_kwargs: Any) -> None:
    """Install the hook, then call ``mlflow.autolog(**kwargs)``; ``disable=True`` removes the hook too.

    ``spark``: a SparkSession whose Spark listeners are attached too (detached on ``disable=True``).
    """
    import mlflow

    if disable:
        uninstall()
        if spark is not None:
            from databricks_nats.integrations.spark import detach

            detach(spark)
        mlflow.autolog(disable=True, **mlflow_autolog_kwargs)
        return
    install()
    if spark is not None:
        from databricks_nats.integrations.spark import attach

        attach(spark)
    mlflow.autolog(**mlflow_autolog_kwargs)
