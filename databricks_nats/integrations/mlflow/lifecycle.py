"""Experiment and run lifecycle events from the tracking store: ``mlflow.experiment.created`` / ``renamed`` /
``deleted`` / ``restored`` and ``mlflow.run.deleted`` / ``restored``.

``CALLS`` names the tracking store methods the hook wraps for them, each with its describer
``describe(hook, store, result, *args, **kwargs)``, which publishes through ``hook.publish`` (so an event that
needs a lookup, a run created elsewhere, is described on the hook's worker). Experiments' names and artifact
locations are learned from MLflow's own calls and results (``create_experiment``, ``get_experiment``,
``get_experiment_by_name``), never asked: a rename names the previous name when the hook knew it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from databricks_nats.integrations.mlflow.urls import Ui

__all__ = ["CALLS", "Experiments", "experiment_url"]

MAX_EXPERIMENTS = 4096


class Experiments:
    """Experiment id -> (name, artifact location), learned from calls and results; bounded."""

    def __init__(self, max_items: int = MAX_EXPERIMENTS) -> None:
        self._known: dict[str, tuple[str | None, str | None]] = {}
        self._max = max_items
        self._lock = threading.Lock()

    def learn(self, experiment_id: Any, name: str | None, artifact_location: str | None = None) -> None:
        key = str(experiment_id)
        with self._lock:
            before = self._known.pop(key, (None, None))
            if len(self._known) >= self._max:  # bounded: forget the oldest
                self._known.pop(next(iter(self._known)))
            self._known[key] = (name or before[0], artifact_location or before[1])

    def get(self, experiment_id: Any) -> tuple[str | None, str | None]:
        return self._known.get(str(experiment_id), (None, None))


def experiment_url(ui: Ui, experiment_id: str) -> str | None:
    """The experiment's page in the UI of its tracking server (Databricks or OSS MLflow routes), when known."""
    if not ui.base:
        return None
    if ui.kind == "databricks":
        return f"{ui.base}/ml/experiments/{experiment_id}"
    return f"{ui.base}/#/experiments/{experiment_id}"


def _experiment(hook: Any, store: Any, action: str, experiment_id: Any, previous: str | None = None) -> None:
    experiment_id = str(experiment_id)
    name, location = hook.experiments.get(experiment_id)

    def build() -> tuple[str, dict[str, Any]]:
        data = {
            "experiment_id": experiment_id,
            "name": name,
            "artifact_location": location,
            "experiment_url": experiment_url(hook._store_ui(store), experiment_id),
        }
        if action == "renamed":
            data["previous_name"] = previous
        return f"mlflow.experiment.{action}", data

    hook.publish(("experiment", experiment_id), build)


def _created(
    hook: Any, store: Any, result: Any, name: Any = None, artifact_location: Any = None, *a: Any, **k: Any
) -> None:
    name = k.get("name", name)
    location = k.get("artifact_location", artifact_location)
    if result is None:
        return
    hook.experiments.learn(result, name if isinstance(name, str) else None, location or None)
    _experiment(hook, store, "created", result)


def _renamed(
    hook: Any, store: Any, result: Any, experiment_id: Any = None, new_name: Any = None, *a: Any, **k: Any
) -> None:
    experiment_id = k.get("experiment_id", experiment_id)
    new_name = k.get("new_name", new_name)
    previous = hook.experiments.get(experiment_id)[0]
    hook.experiments.learn(experiment_id, new_name if isinstance(new_name, str) else None)
    _experiment(hook, store, "renamed", experiment_id, previous)


def _deleted(hook: Any, store: Any, result: Any, experiment_id: Any = None, *a: Any, **k: Any) -> None:
    _experiment(hook, store, "deleted", k.get("experiment_id", experiment_id))


def _restored(hook: Any, store: Any, result: Any, experiment_id: Any = None, *a: Any, **k: Any) -> None:
    _experiment(hook, store, "restored", k.get("experiment_id", experiment_id))


def _learn(hook: Any, store: Any, result: Any, *a: Any, **k: Any) -> None:
    """``get_experiment`` / ``get_experiment_by_name`` results: the experiment's name and location, no event."""
    experiment_id = getattr(result, "experiment_id", None)
    if experiment_id is not None:
        hook.experiments.learn(experiment_id, getattr(result, "name", None), getattr(result, "artifact_location", None))


def _run(action: str) -> Callable[..., None]:
    def describe(hook: Any, store: Any, result: Any, run_id: Any = None, *a: Any, **k: Any) -> None:
        run_id = str(k.get("run_id", run_id))
        hook.publish(("run", run_id), lambda: (f"mlflow.run.{action}", hook.run_base(store, run_id)))

    return describe


CALLS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("create_experiment", _created),
    ("rename_experiment", _renamed),
    ("delete_experiment", _deleted),
    ("restore_experiment", _restored),
    ("get_experiment", _learn),
    ("get_experiment_by_name", _learn),
    ("delete_run", _run("deleted")),
    ("restore_run", _run("restored")),
)
