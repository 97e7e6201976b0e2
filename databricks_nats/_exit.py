"""Exit ordering: the clients' exit flush runs after every exit handler that may still emit.

``atexit`` runs handlers last-registered-first. MLflow registers ``_safe_end_run`` (which ends a run a script
left open, so the hook emits ``mlflow.run.finished``) while ``import mlflow`` runs; our MLflow entry point
imports this module earlier in that same import, so the handler below is registered before MLflow's and
runs after it. Without MLflow it is registered when ``databricks_nats.client`` is first imported; it flushes
and closes every client whose publisher runs (``_live.py``). Standard library only.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable

__all__ = ["at_exit"]

_lock = threading.Lock()
_callbacks: list[Callable[[], None]] = []


def at_exit(callback: Callable[[], None]) -> None:
    """Run ``callback`` at interpreter exit, after the exit handlers of MLflow and of code imported after it."""
    with _lock:
        if callback not in _callbacks:
            _callbacks.append(callback)


def _run() -> None:
    with _lock:
        callbacks = list(_callbacks)
        _callbacks.clear()
    for callback in reversed(callbacks):
        callback()


atexit.register(_run)
