"""Where the settings sections come from: modules the package root names, imported when settings first need them.

The core (``settings.py``) must not import the integrations that declare sections (MLflow's, Spark's), and
``import databricks_nats`` must stay cheap (MLflow imports it while ``import mlflow`` runs). So the root
declares the modules by name (``declare``), which costs nothing, and ``settings.py`` imports them (``load``)
the first time it builds, resolves or describes settings. A third party may declare its own.
"""

from __future__ import annotations

import importlib
import threading

__all__ = ["declare", "load"]

_declared: list[str] = []
_loaded: set[str] = set()
_lock = threading.RLock()


def declare(module: str) -> None:
    """Name a module whose import registers settings sections (``settings.register_section``)."""
    with _lock:
        if module not in _declared:
            _declared.append(module)


def load() -> None:
    """Import every declared module not imported yet (each registers its sections as it is imported)."""
    if len(_loaded) == len(_declared):
        return
    with _lock:
        for module in _declared:
            if module not in _loaded:
                _loaded.add(module)  # first: a section module that imports settings does not recurse here
                importlib.import_module(module)
