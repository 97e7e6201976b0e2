"""Evaluation results as events: ``mlflow.evaluate``, ``mlflow.models.evaluate`` and ``mlflow.genai.evaluate``.

``install()`` wraps these public functions (the module attributes users call; ``from mlflow import evaluate``
done before installing keeps MLflow's own). A successful evaluation becomes one ``mlflow.run.evaluated``: the
run's ids, the metrics' names and values, the results table's URI (``eval_results_table``, when one was logged;
``mlflow.genai.evaluate`` keeps its results in the run's traces), the function called and the rows evaluated.
Results and exceptions are MLflow's, unchanged; nothing is published when the evaluation raises. The names of a
run evaluate made and ended itself are looked up on the hook's worker thread (``hook.publish``), never by the
caller.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

from databricks_nats.client import current_client
from databricks_nats.integrations.mlflow import _compat, artifacts

__all__ = ["install", "installed", "uninstall"]

_METRICS_MAX = 500

_EVALUATORS = (  # (module, attribute): the public functions, the name users call them by
    ("mlflow", "evaluate"),
    ("mlflow.models", "evaluate"),
    ("mlflow.genai", "evaluate"),
)
_patched: list[tuple[Any, str, Any]] = []  # (module, attribute, original)
_local = threading.local()
_hook_of: Callable[[], Any] = lambda: None  # noqa: E731 - the installed hook, or None (given by install)


def _wrap_evaluate(original: Callable[..., Any], evaluator: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def evaluate(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # pytest and IPython hide this frame
        depth = getattr(_local, "depth", 0)
        _local.depth = depth + 1
        try:
            result = original(*args, **kwargs)
        finally:
            _local.depth = depth
        if depth == 0:  # mlflow.genai.evaluate may call another evaluate: the outermost one is the event
            try:
                _evaluated(evaluator, result, args, kwargs)
            except Exception as e:  # noqa: BLE001 - an evaluation is never failed by its event
                current_client().fail(e, f"mlflow hook {evaluator}")
        return result

    evaluate.__databricks_nats_original__ = original  # type: ignore[attr-defined]
    return evaluate


def _number(value: Any) -> float | None:
    if isinstance(value, bool | str | bytes) or not hasattr(value, "__float__"):  # numbers, numpy's included
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _rows(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    table = getattr(result, "result_df", None)  # mlflow.genai.evaluate: one row per evaluated record
    if table is not None:
        return len(table)
    data = kwargs.get("data", args[1] if len(args) > 1 else None)  # evaluate(model, data, …)
    if data is not None and not isinstance(data, str | bytes) and hasattr(data, "__len__"):
        return len(data)
    return None


def _results_uri(result: Any) -> str | None:
    tables = getattr(result, "artifacts", None)
    if isinstance(tables, dict):
        for name, artifact in tables.items():
            if "eval_results_table" in str(name):
                return artifacts.normal_uri(getattr(artifact, "uri", None))
    return None


def _evaluated(evaluator: str, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    hook = _hook_of()
    run_id = _compat.evaluation_run_id(result)
    if hook is None or not hook.enabled or not isinstance(run_id, str):
        return
    metrics = {}
    for name, value in list((getattr(result, "metrics", None) or {}).items())[:_METRICS_MAX]:
        number = _number(value)
        if number is not None:
            metrics[str(name)] = number
    data = {
        "metrics": metrics,
        "results_uri": _results_uri(result),
        "evaluator": evaluator,
        "rows": _rows(result, args, kwargs),
    }
    store = _compat.tracking_store()  # the store of the current tracking URI, which evaluate logged to
    # a run evaluate made and ended itself is looked up on the hook's worker; after the run's other events
    hook.publish(("run", run_id), lambda: ("mlflow.run.evaluated", {**hook.run_base(store, run_id), **data}))


def _mlflow_ready() -> bool:
    """Whether ``import mlflow`` has finished (the zero-code entry point installs while it runs)."""
    module = sys.modules.get("mlflow")
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


def install(hook_of: Callable[[], Any]) -> None:
    """Wrap the evaluation functions (idempotent); a no-op until ``import mlflow`` has finished. ``hook_of``
    returns the installed hook (or None) when an evaluation ends."""
    import importlib

    global _hook_of
    _hook_of = hook_of
    if _patched or not _mlflow_ready():
        return
    for module_name, attr in _EVALUATORS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # MLflow 2: no mlflow.genai
            continue
        original = getattr(module, attr, None)
        if callable(original) and not hasattr(original, "__databricks_nats_original__"):
            setattr(module, attr, _wrap_evaluate(original, f"{module_name}.{attr}"))
            _patched.append((module, attr, original))


def installed() -> bool:
    return bool(_patched)


def uninstall() -> None:
    """Restore the evaluation functions (unless replaced since: a user's patch stays)."""
    while _patched:
        module, attr, original = _patched.pop()
        if getattr(getattr(module, attr, None), "__databricks_nats_original__", None) is original:
            setattr(module, attr, original)
