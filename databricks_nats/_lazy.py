"""The one lazy-export helper (PEP 562): a package names what it exports and where each name lives.

    __getattr__, __dir__ = lazy_exports(globals(), {"Client": "databricks_nats.client", "bridge": ".bridging"})

A name is imported on first access and cached in the module's globals, so later look-ups never reach
``__getattr__``. A module name starting with ``.`` is relative to the exporting package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    module_globals: dict[str, Any], where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for the module whose ``globals()`` is given."""
    module_name = module_globals["__name__"]
    package = module_globals.get("__package__") or module_name
    exports = dict(where)

    def __getattr__(name: str) -> Any:
        source = exports.get(name)
        if source is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source, package), name)
        module_globals[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*module_globals, *exports})

    return __getattr__, __dir__
