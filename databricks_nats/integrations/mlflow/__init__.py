"""The MLflow hook: every run, metric, artifact, logged model and registry change becomes an event.

    import databricks_nats
    databricks_nats.autolog()                 # hook + mlflow.autolog(); or install() for the hook alone

Zero-code: with the wheel installed and ``DATABRICKS_NATS_URL`` set (or a settings file found), MLflow
loads our run context provider (entry point ``mlflow.run_context_provider``) during ``import mlflow``,
which installs the hook (deferred: see ``install_deferred``) before any MLflow call.
MLflow imports that provider during ``import mlflow``, through this package: so this module imports
nothing beyond the standard library until a function is called.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from databricks_nats.status import report_family

if TYPE_CHECKING:
    from databricks_nats.integrations.mlflow.hook import Hook

__all__ = ["autolog", "current_hook", "install", "install_deferred", "installed", "uninstall"]

log = logging.getLogger("databricks_nats")
_lock = threading.RLock()
_hook: Hook | None = None  # kept after uninstall: its runs and metrics state carry over a reinstall
_active = False


def _materialize() -> Hook:
    """The hook, built on first use with the settings in effect (the process-wide one; kept after uninstall)."""
    global _hook
    import atexit

    from databricks_nats.integrations.mlflow.hook import Hook

    if _hook is not None:  # the common case: no lock
        return _hook
    with _lock:
        if _hook is None:
            from databricks_nats.client import on_reconfigure

            hook = _hook = Hook()
            atexit.register(hook.metrics.flush_all)  # runs before the publisher's exit flush (atexit is LIFO)
            on_reconfigure(hook.reconfigure)  # configure(), capture(): the hook takes the new client's settings
        return _hook


def install() -> Hook:
    """Install the store-layer hook (idempotent); return it."""
    hook = _materialize()
    _install(hook.wrap_tracking, hook.wrap_registry, hook.wrap_artifacts, hook)
    return hook


def install_deferred() -> None:
    """Install the hook now, building it (and resolving settings) only when MLflow first hands out a store.

    What the zero-code entry point calls while ``import mlflow`` runs: nothing heavy happens at import.
    """
    _install(
        _wrap_tracking_deferred,
        lambda store: _materialize().wrap_registry(store),
        lambda repo: _materialize().wrap_artifacts(repo),
        None,
    )


def _wrap_tracking_deferred(store: Any) -> Any:
    from databricks_nats.integrations.mlflow import evaluation

    hook = _materialize()
    evaluation.install(current_hook)  # `import mlflow` has finished once MLflow hands out a store
    return hook.wrap_tracking(store)


def _install(wrap_tracking: Any, wrap_registry: Any, wrap_artifacts: Any, hook: Hook | None) -> None:
    global _active
    from databricks_nats.integrations.mlflow import _compat

    with _lock:
        if not _active:
            if _hook is not None:
                _hook.reconfigure()
                _hook.enabled = True
            _compat.install(wrap_tracking, wrap_registry, wrap_artifacts)
            if hook is not None:  # deferred: on the first store MLflow hands out (`import mlflow` has finished)
                from databricks_nats.integrations.mlflow import evaluation

                evaluation.install(current_hook)  # mlflow.evaluate, mlflow.models.evaluate, mlflow.genai.evaluate
            _active = True
            version = "%s.%s" % _compat.mlflow_version()  # noqa: UP031 - a tuple of two ints
            report_family("mlflow", True, f"MLflow {version} hook installed")
            log.info("databricks-nats: MLflow hook installed (MLflow %s)", version)
        elif hook is not None:
            hook.enabled = True


def uninstall() -> None:
    """Remove the hook: registries are restored and stores and repositories already handed out are unwrapped."""
    global _active
    from databricks_nats.integrations.mlflow import _compat, evaluation, genai

    with _lock:
        if not _active:
            return
        if _hook is not None:
            _hook.metrics.flush_all()
            _hook.enabled = False
        _active = False
        _compat.uninstall()
        evaluation.uninstall()
        genai.uninstall()
        report_family("mlflow", False, "MLflow hook removed")


def installed() -> bool:
    return _active


def current_hook() -> Hook | None:
    """The installed hook, or None."""
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
