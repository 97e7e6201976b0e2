"""Wrappers for MLflow stores and artifact repositories that turn successful calls into pointer events.

Every wrapper calls MLflow first and returns (or raises) exactly what MLflow did; only after a successful
call does it describe the call as an event. Describing never raises into the caller (fail-open, logged
and counted in ``stats()``) unless ``strict`` is set. A per-thread depth guard publishes only the
outermost store call (``FileStore.create_run`` calls ``set_tag`` and ``update_run_info`` itself).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from databricks_nats.client import Client, current_client
from databricks_nats.integrations.mlflow import _compat, artifacts, facts, genai, registry, urls
from databricks_nats.integrations.mlflow.metrics import MetricsCoalescer
from databricks_nats.integrations.mlflow.names import NameResolver

__all__ = ["Hook"]

_VALUE_MAX = 500
_TERMINAL = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
_UNSET: Any = object()


class Hook:
    """Knows the runs it has seen and emits the MLflow event types; wraps stores and repositories."""

    def __init__(self) -> None:
        self.enabled = True
        self._local = threading.local()
        self._runs: dict[str, dict[str, Any]] = {}  # run_id -> {experiment_id, start_time, run_name, artifact_uri}
        self._flavors: dict[str, list[str]] = {}  # logged model id -> flavours read from its uploaded MLmodel
        self._settings: Any = None
        self._store_uris: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()
        self._uis: dict[str | None, urls.Ui] = {}  # tracking/registry URI -> its UI, for these settings
        self._workspace_url: Any = _UNSET  # looked up on first need after each (re)configure
        self.names = NameResolver()
        self.metrics = MetricsCoalescer(lambda data: self._emit("mlflow.run.metrics", data), "coalesce", 1.0)
        self.reconfigure()

    def reconfigure(self, client: Client | None = None) -> None:
        """Apply the settings of ``client`` (default: the current one, e.g. ``capture()``'s); ``on_reconfigure``
        calls this with each new default client."""
        self._apply((client if client is not None else current_client()).settings)

    def _apply(self, settings: Any) -> None:
        self._settings = settings
        self._uis = {}
        self._workspace_url = _UNSET
        self._deny = settings.deny_keys
        self._allow = settings.allow_keys
        self.metrics.mode = settings.metrics_mode
        self.metrics.interval = settings.metrics_interval

    def _refresh(self) -> None:
        """Pick up settings replaced since the last run began (``configure()`` again): two attribute reads."""
        settings = current_client().settings
        if settings is not self._settings:
            self._apply(settings)

    # ---- UI URLs ---------------------------------------------------------------------------------

    def _workspace(self) -> str | None:
        """The workspace URL from context detection (else ``DATABRICKS_HOST``): once per (re)configure."""
        if self._workspace_url is _UNSET:
            found = None
            try:
                from databricks_nats.integrations.databricks.context import detect_context

                settings = self._settings if self._settings is not None else current_client().settings
                found = detect_context(settings, sdk=True).workspace_url
                if not found and settings.detect_context:
                    from databricks_nats.integrations.databricks.sdk import identity

                    known = identity(settings.context_timeout)  # cached per process: the SDK's configured host
                    found = known.workspace_url if known is not None else None
            except Exception as e:  # noqa: BLE001 - a URL is a nicety, never a reason to fail
                current_client().fail(e, "mlflow workspace url")
            self._workspace_url = urls.databricks_workspace_url(found)
        url: str | None = self._workspace_url
        return url

    def _ui(self, uri: str | None) -> urls.Ui:
        """The UI runs and models of a store built for this URI live in (computed once per URI and configure)."""
        ui = self._uis.get(uri)
        if ui is None:
            if uri and uri.startswith("databricks-uc"):
                ui = urls.Ui("databricks", self._workspace())
            else:
                on_databricks = bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))
                ui = urls.ui_for(uri, self._workspace, on_databricks)
            if len(self._uis) > 64:
                self._uis.clear()
            self._uis[uri] = ui
        return ui

    def _store_ui(self, store: Any) -> urls.Ui:
        try:
            uri = self._store_uris.get(store, _UNSET)
        except TypeError:  # not weak-referenceable
            uri = _UNSET
        if uri is _UNSET:
            uri = _compat.store_uri(store) if store is not None else None
        return self._ui(uri or _compat.current_tracking_uri())

    def _note_store(self, store: Any) -> None:
        with contextlib.suppress(TypeError):  # not weak-referenceable: its URI is read again when needed
            self._store_uris[store] = _compat.store_uri(store)

    # ---- plumbing --------------------------------------------------------------------------------

    def _emit(self, event_type: str, data: dict[str, Any]) -> None:
        if self.enabled:
            current_client().emit(event_type, data, id=facts.fact_id(event_type, data))

    emit = _emit  # what the describers of other modules (genai, registry) publish through

    def _wrap(self, obj: Any, name: str, describe: Callable[..., None]) -> None:
        original = getattr(obj, name, None)
        if original is None:
            return
        local = self._local

        @functools.wraps(original)  # MLflow inspects some signatures (create_model_version)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(local, "depth", 0)
            local.depth = depth + 1
            try:
                result = original(*args, **kwargs)
            finally:
                local.depth = depth
            if depth == 0 and self.enabled:
                try:
                    describe(obj, result, *args, **kwargs)
                except Exception as e:  # noqa: BLE001 - a hook bug must never break training
                    current_client().fail(e, f"mlflow hook {name}")
            return result

        _compat.patch(obj, name, wrapper)

    def _keep(self, key: str) -> bool:
        low = key.lower()
        if any(fnmatch.fnmatchcase(low, p) for p in self._deny):
            return False
        return not self._allow or any(fnmatch.fnmatchcase(low, p) for p in self._allow)

    def _run_base(self, store: Any, run_id: str) -> dict[str, Any]:
        known = self._runs.get(run_id)
        if known is None:  # a run created elsewhere (another process, before the hook): ask once
            info = store.get_run(run_id).info
            known = self._remember(info, store)
        return {
            "experiment_id": known["experiment_id"],
            "run_id": run_id,
            "run_name": known["run_name"],
            "artifact_uri": known["artifact_uri"],
            "run_url": known["run_url"],
        }

    def _remember(self, info: Any, store: Any = None) -> dict[str, Any]:
        known = {
            "experiment_id": str(info.experiment_id),
            "start_time": info.start_time,
            "run_name": info.run_name,
            "artifact_uri": artifacts.normal_uri(info.artifact_uri),
            "run_url": self._store_ui(store).run_url(str(info.experiment_id), info.run_id),
        }
        if len(self._runs) > 10_000:  # bounded: forget the oldest
            self._runs.pop(next(iter(self._runs)))
        self._runs[info.run_id] = known
        return known

    # ---- tracking store --------------------------------------------------------------------------

    def wrap_tracking(self, store: Any) -> Any:
        if not _compat.mark(store):
            return store
        self._note_store(store)
        calls: list[tuple[str, Callable[..., None]]] = [
            ("create_run", self._create_run),
            ("update_run_info", self._update_run_info),
            ("log_batch", self._log_batch),
            ("log_metric", self._log_metric),
            ("log_param", self._log_param),
            ("set_tag", self._set_tag),
            ("log_inputs", self._log_inputs),
            ("create_logged_model", self._create_logged_model),
            ("finalize_logged_model", self._finalize_logged_model),
        ]
        calls += [(name, functools.partial(describe, self)) for name, describe in genai.TRACKING_CALLS]
        for name, describe in calls:
            self._wrap(store, name, describe)
        _compat.rebind_async_queue(store)
        return store

    def _create_run(self, store: Any, run: Any, *args: Any, **kwargs: Any) -> None:
        info = run.info
        known = self._remember(info, store)
        tags = dict(run.data.tags or {})
        # create_run(experiment_id, user_id, start_time, tags, run_name): the tags given, if the Run lacks them
        given = kwargs.get("tags", args[3] if len(args) > 3 else None)
        for tag in given or ():
            tags.setdefault(tag.key, tag.value)
        self._emit(
            "mlflow.run.started",
            {
                "experiment_id": known["experiment_id"],
                "run_id": info.run_id,
                "run_name": info.run_name,
                "run_url": known["run_url"],
                "artifact_uri": known["artifact_uri"],
                "start_time": info.start_time,
                "parent_run_id": tags.get("mlflow.parentRunId"),
                "user": info.user_id or None,
            },
        )
        self._refresh()  # the first event built the transport: its settings (deny list) are now known
        self._emit_kv(store, info.run_id, "tags", tags)  # start_run(tags=…); system tags are filtered
        _compat.spark_set_run_property(info.run_id)

    def _update_run_info(
        self, store: Any, result: Any, run_id: str, run_status: Any, end_time: Any = None, *a: Any, **k: Any
    ) -> None:
        status = _compat.run_status_name(run_status)
        action = _TERMINAL.get(status)
        if action is None:
            return  # a rename or RUNNING: not the end of the run
        base = self._run_base(store, run_id)
        start = self._runs.get(run_id, {}).get("start_time")
        duration = int(end_time - start) if isinstance(end_time, int) and isinstance(start, int) else None

        def ended(latest: dict[str, Any]) -> None:
            self._emit(f"mlflow.run.{action}", {**base, "status": status, "duration_ms": duration, "metrics": latest})

        self.metrics.finish(run_id, then=ended)  # the final metrics event and the end are the run's last events
        self._runs.pop(run_id, None)
        _compat.spark_set_run_property(None)

    def _log_batch(
        self,
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
            self.metrics.add(run_id, functools.partial(self._run_base, store, run_id), list(metrics))
        if params:
            self._emit_kv(store, run_id, "params", {p.key: p.value for p in params})
        if tags:
            self._emit_kv(store, run_id, "tags", {t.key: t.value for t in tags})

    def _log_metric(self, store: Any, result: Any, run_id: str, metric: Any, *a: Any, **k: Any) -> None:
        self.metrics.add(run_id, functools.partial(self._run_base, store, run_id), [metric])

    def _log_param(self, store: Any, result: Any, run_id: str, param: Any, *a: Any, **k: Any) -> None:
        self._emit_kv(store, run_id, "params", {param.key: param.value})

    def _set_tag(self, store: Any, result: Any, run_id: str, tag: Any, *a: Any, **k: Any) -> None:
        self._emit_kv(store, run_id, "tags", {tag.key: tag.value})

    def _emit_kv(self, store: Any, run_id: str, kind: str, values: dict[str, Any]) -> None:
        kept = {
            k: str(v)[:_VALUE_MAX]
            for k, v in values.items()
            if not (kind == "tags" and k.startswith("mlflow.")) and self._keep(k)
        }
        if kept:
            self._emit(f"mlflow.run.{kind}", {**self._run_base(store, run_id), kind: kept})

    def _log_inputs(self, store: Any, result: Any, run_id: str, datasets: Any = None, *a: Any, **k: Any) -> None:
        items = []
        for d in datasets or []:
            ds = getattr(d, "dataset", d)
            items.append(
                {
                    "name": getattr(ds, "name", None),
                    "digest": getattr(ds, "digest", None),
                    "source_type": getattr(ds, "source_type", None),
                    "source": str(getattr(ds, "source", ""))[:_VALUE_MAX],
                    "context": next(
                        (t.value for t in getattr(d, "tags", []) or [] if t.key == "mlflow.data.context"), None
                    ),
                }
            )
        if items:
            self._emit("mlflow.run.inputs", {**self._run_base(store, run_id), "datasets": items})

    def _create_logged_model(self, store: Any, model: Any, *args: Any, **kwargs: Any) -> None:
        data = _logged_model_data(model, self._flavors.get(model.model_id, []), self._store_ui(store))
        self._emit("mlflow.logged_model.logged", data)

    def _finalize_logged_model(self, store: Any, model: Any, model_id: str, status: Any, *a: Any, **k: Any) -> None:
        flavors = self._flavors.pop(model_id, None)
        if model is not None and hasattr(model, "model_id"):
            if flavors is None:  # files uploaded by a path we did not see: read a local MLmodel, never the network
                flavors = artifacts.local_flavors(getattr(model, "artifact_location", None))
            data = _logged_model_data(model, flavors, self._store_ui(store))
        else:
            data = {"model_id": model_id, "experiment_id": "", "flavors": flavors or []}
        data["status"] = str(getattr(status, "name", status))
        self._emit("mlflow.logged_model.finalized", data)

    def note_flavors(self, model_id: str, flavors: list[str]) -> None:
        """Remember the flavours of a logged model's MLmodel as its files are uploaded (until finalised)."""
        if len(self._flavors) >= 1000:  # bounded: forget the oldest
            self._flavors.pop(next(iter(self._flavors)))
        self._flavors[model_id] = flavors

    # ---- model registry --------------------------------------------------------------------------

    def wrap_registry(self, store: Any) -> Any:
        if not _compat.mark(store):
            return store
        uc = _compat.is_unity_catalog_registry(store)  # from the registry URI's store, never from dots in names
        self._note_store(store)
        if uc:  # results that carry the registry's full name teach the resolver, without an event
            for name in ("get_registered_model", "get_model_version"):
                self._wrap(store, name, self._learn_name)
        for name, action in registry.CALLS:
            self._wrap(store, name, functools.partial(self._registry_event, action, uc))
        return store

    def _learn_name(self, store: Any, result: Any, name: Any = None, *args: Any, **kwargs: Any) -> None:
        typed = kwargs.get("name", name)
        full = registry.result_name(result)
        if isinstance(typed, str) and full:
            self.names.learn(store, typed, full)

    def _registry_event(self, action: str, uc: bool, store: Any, result: Any, *args: Any, **kwargs: Any) -> None:
        resolve = None
        if uc:  # one subject per model: the registry's three-level name, whatever the caller typed
            full = registry.result_name(result)
            if full:
                self.names.learn(store, registry.typed_name(action, args, kwargs), full)
            else:
                resolve = functools.partial(self.names.resolve, store)
        ui = self._store_ui(store) if uc else urls.NO_UI
        described = registry.describe_registry_call(action, result, args, kwargs, uc, resolve, ui)
        if described is None:
            return
        event_type, data = described
        if "key" in data and not self._keep(str(data["key"])):  # tags: the deny list, as for run tags
            return
        self._emit(event_type, data)

    # ---- artifact repositories ---------------------------------------------------------------------

    def wrap_artifacts(self, repo: Any) -> Any:
        if _compat.is_delegating_repo(repo) or not _compat.mark(repo):
            return repo
        return artifacts.wrap_repo(repo, self._emit, self.experiment_of, self.note_flavors)

    def experiment_of(self, run_id: str) -> str | None:
        """The experiment of a run (an artifact URI need not contain it): known runs, else asked once."""
        known = self._runs.get(run_id)
        if known is None:
            from mlflow.tracking import MlflowClient

            try:
                known = self._remember(MlflowClient().get_run(run_id).info)  # the current tracking URI's store
            except Exception:  # noqa: BLE001 - the URI's layout is the fallback
                return None
        return str(known["experiment_id"])


def _logged_model_data(model: Any, flavors: list[str] | None = None, ui: urls.Ui = urls.NO_UI) -> dict[str, Any]:
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
