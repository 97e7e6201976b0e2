"""GenAI events (MLflow 3): traces, assessments and evaluations, described from the store calls MLflow makes.

``TRACKING_CALLS`` names the tracking store methods the hook wraps for them, each with its describer
``describe(hook, store, result, *args, **kwargs)``, which publishes through ``hook.emit``.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["TRACKING_CALLS"]

TRACKING_CALLS: tuple[tuple[str, Callable[..., None]], ...] = ()
