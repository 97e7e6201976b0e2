"""Which event families are live in this process, and why not: shown by ``stats()`` and ``doctor``.

Integrations report here when they attach (the Spark job listener on a Spark Connect session reports
``spark.jobs`` as unavailable, say); nothing here imports anything beyond the standard library.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["families", "report_family"]

_lock = threading.Lock()
_families: dict[str, dict[str, Any]] = {}


def report_family(name: str, live: bool, detail: str = "") -> None:
    """Record whether the event family ``name`` (``mlflow``, ``spark.jobs``, ``spark.streams``…) is live, and why."""
    with _lock:
        _families[name] = {"live": live, "detail": detail}


def families() -> dict[str, dict[str, Any]]:
    """``{family: {"live": bool, "detail": str}}`` for every family an integration reported."""
    with _lock:
        return {name: dict(state) for name, state in sorted(_families.items())}
