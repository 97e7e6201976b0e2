"""Run and logged-model events from the tracking store: started, params, tags, metrics, inputs, the run's end,
logged models logged and finalised.

``CALLS`` names the tracking store methods the hook wraps for them, each with its describer
``describe(hook, store, result, *args, **kwargs)``; events go out through ``hook.publish`` keyed by the run (or
logged model), so a run's events keep their order even when one of them waits on the hook's worker. Every run
that ends has its ``mlflow.run.started``: a run the hook never saw start (resumed with ``start_run(run_id=…)``,
created by another client or process) gets one right before its end, from what MLflow's own ``get_run`` told
the hook, else looked up on the worker through the same store (its id is derived from the run id, so a start
announced twice is stored once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from databricks_nats.integrations.mlflow import _compat, artifacts, urls

__all__ = ["CALLS", "logged_model_data"]

VALUE_MAX = 500
_TERMINAL = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
Described = tuple[str, dict[str, Any]] | None


def _create_run(hook: Any, store: Any, run: Any, *args: Any, **kwargs: Any) -> None:
    run_id = run.info.run_id
    known = hook.remember(run, store)
    tags = dict(run.data.tags or {})
    # create_run(experiment_id, user_id, start_time, tags, run_name): the tags given, if the Run lacks them
    given = kwargs.get("tags", args[3] if len(args) > 3 else None)
    for tag in given or ():
        tags.setdefault(tag.key, tag.value)
    known["parent_run_id"] = tags.get("mlflow.parentRunId")
    known["started"] = True
    hook.publish(("run", run_id), lambda: hook.started(store, run_id))
    hook.refresh()  # the first event built the transport: its settings (deny list) are now known
    _emit_kv(hook, store, run_id, "tags", tags)  # start_run(tags=…); system tags are filtered
    _compat.spark_set_run_property(run_id)


def _learn_run(hook: Any, store: Any, run: Any, *args: Any, **kwargs: Any) -> None:
    """A ``get_run`` result MLflow asked for: the hook knows the run from now on (no event, no extra call)."""
    if getattr(run, "info", None) is not None:
        hook.remember(run, store)


def _update_run_info(
    hook: Any, store: Any, result: Any, run_id: str, run_status: Any, end_time: Any = None, *a: Any, **k: Any
) -> None:
    status = _compat.run_status_name(run_status)
    if hook.note_status(run_id, status) == status:
        return  # a rename (MLflow passes the status the run has): nothing started or ended
    key = ("run", run_id)
    action = _TERMINAL.get(status)
    if action is None and status != "RUNNING":
        return
    if not hook.saw_start(run_id):  # resumed, or created elsewhere: its start comes first
        hook.publish(key, lambda: hook.started(store, run_id))
    if action is None:
        return

    def ended(latest: dict[str, Any]) -> None:
        def build() -> Described:
            base = hook.run_base(store, run_id)
            start = hook.run_start_time(run_id)
            duration = int(end_time - start) if isinstance(end_time, int) and isinstance(start, int) else None
            return f"mlflow.run.{action}", {**base, "status": status, "duration_ms": duration, "metrics": latest}

        hook.publish(key, build)

    hook.metrics.finish(run_id, then=ended)  # the final metrics event and the end are the run's last events
    _compat.spark_set_run_property(None)


def metrics_event(hook: Any, run_id: str, store: Any, payload: dict[str, Any]) -> None:
    """What the metrics coalescer hands over (latest values, points, final): one ``mlflow.run.metrics`` event."""
    hook.publish(("run", run_id), lambda: ("mlflow.run.metrics", {**hook.run_base(store, run_id), **payload}))


def _log_batch(
    hook: Any,
    store: Any,
    result: Any,
    run_id: str,
    metrics: Any = (),
    params: Any = (),
    tags: Any = (),
    *a: Any,
    **k: Any,
) -> None:
    if metrics:
        hook.metrics.add(run_id, store, list(metrics))
    if params:
        _emit_kv(hook, store, run_id, "params", {p.key: p.value for p in params})
    if tags:
        _emit_kv(hook, store, run_id, "tags", {t.key: t.value for t in tags})


def _log_metric(hook: Any, store: Any, result: Any, run_id: str, metric: Any, *a: Any, **k: Any) -> None:
    hook.metrics.add(run_id, store, [metric])


def _log_param(hook: Any, store: Any, result: Any, run_id: str, param: Any, *a: Any, **k: Any) -> None:
    _emit_kv(hook, store, run_id, "params", {param.key: param.value})


def _set_tag(hook: Any, store: Any, result: Any, run_id: str, tag: Any, *a: Any, **k: Any) -> None:
    _emit_kv(hook, store, run_id, "tags", {tag.key: tag.value})


def _emit_kv(hook: Any, store: Any, run_id: str, kind: str, values: dict[str, Any]) -> None:
    kept = {
        k: str(v)[:VALUE_MAX]
        for k, v in values.items()
        if not (kind == "tags" and k.startswith("mlflow.")) and hook.keep(k)
    }
    if kept:
        hook.publish(("run", run_id), lambda: (f"mlflow.run.{kind}", {**hook.run_base(store, run_id), kind: kept}))


def _log_inputs(hook: Any, store: Any, result: Any, run_id: str, datasets: Any = None, *a: Any, **k: Any) -> None:
    items = [artifacts.dataset_item(d, VALUE_MAX) for d in datasets or []]
    if items:
        hook.publish(
            ("run", run_id), lambda: ("mlflow.run.inputs", {**hook.run_base(store, run_id), "datasets": items})
        )


def _create_logged_model(hook: Any, store: Any, model: Any, *args: Any, **kwargs: Any) -> None:
    flavors = hook.flavors_of(model.model_id)
    hook.publish(
        ("model", model.model_id),
        lambda: ("mlflow.logged_model.logged", logged_model_data(model, flavors, hook.store_ui(store))),
    )


def _finalize_logged_model(hook: Any, store: Any, model: Any, model_id: str, status: Any, *a: Any, **k: Any) -> None:
    flavors = hook.flavors_of(model_id, forget=True)
    if model is not None and hasattr(model, "model_id") and flavors is None:
        # files uploaded by a path we did not see: read a local MLmodel, never the network
        flavors = artifacts.local_flavors(getattr(model, "artifact_location", None))

    def build() -> Described:
        if model is not None and hasattr(model, "model_id"):
            data = logged_model_data(model, flavors, hook.store_ui(store))
        else:
            data = {"model_id": model_id, "experiment_id": "", "flavors": flavors or []}
        data["status"] = str(getattr(status, "name", status))
        return "mlflow.logged_model.finalized", data

    hook.publish(("model", model_id), build)


def logged_model_data(model: Any, flavors: list[str] | None = None, ui: urls.Ui = urls.NO_UI) -> dict[str, Any]:
    experiment_id = str(getattr(model, "experiment_id", ""))
    data = {
        "experiment_id": experiment_id,
        "model_id": model.model_id,
        "name": getattr(model, "name", None),
        "source_run_id": getattr(model, "source_run_id", None),
        "artifact_location": artifacts.normal_uri(getattr(model, "artifact_location", None)),
        "model_uri": urls.logged_model_uri(model.model_id),
        "flavors": list(flavors or []),
        "status": str(getattr(getattr(model, "status", None), "name", getattr(model, "status", None)) or "") or None,
        "created_at": getattr(model, "creation_timestamp", None) or int(time.time() * 1000),
    }
    url = ui.logged_model_url(experiment_id, model.model_id)
    if url:
        data["model_url"] = url
    return data


CALLS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("create_run", _create_run),
    ("get_run", _learn_run),
    ("update_run_info", _update_run_info),
    ("log_batch", _log_batch),
    ("log_metric", _log_metric),
    ("log_param", _log_param),
    ("set_tag", _set_tag),
    ("log_inputs", _log_inputs),
    ("create_logged_model", _create_logged_model),
    ("finalize_logged_model", _finalize_logged_model),
)
