"""Wrappers for MLflow stores and artifact repositories that turn successful calls into pointer events.

Every wrapper calls MLflow first and returns (or raises) exactly what MLflow did: the same result, the same
exception object. It is a method of the store it sits on, one frame per call, hidden from pytest's and IPython's
tracebacks (``__tracebackhide__``), and it calls the store's class attribute as it is at call time, so a
class-level patch is called. Only after a successful call does it describe the call as an event, without any
remote call: from the call's arguments and result, and from what MLflow's own calls taught the hook (runs from
``get_run`` results, experiments' names, Unity Catalog names). What only a lookup could tell (a run created
elsewhere, a model's full name, the workspace URL) is looked up on the hook's worker thread (``later.py``)
against the store the call used, and the event goes out from there, with the call's time and context; a run's
(or a model's) later events wait behind it, so their order holds. Describing never raises into the caller
(fail-open, logged and counted) unless ``strict`` is set. A per-thread depth guard publishes only the outermost
store call (``FileStore.create_run`` calls ``set_tag`` and ``update_run_info`` itself).
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from databricks_nats._exit import at_exit
from databricks_nats.client import Client, current_client
from databricks_nats.integrations.mlflow import _compat, artifacts, facts, genai, later, lifecycle, registry, runs, urls
from databricks_nats.integrations.mlflow.later import Later, NeedsLookup
from databricks_nats.integrations.mlflow.metrics import MetricsCoalescer
from databricks_nats.integrations.mlflow.names import NameResolver
from databricks_nats.integrations.mlflow.places import Places

__all__ = ["Hook", "NeedsLookup"]  # NeedsLookup: from later.py, where the worker that answers it lives

log = logging.getLogger("databricks_nats")
Described = tuple[str, dict[str, Any]] | None


class Hook:
    """Knows the runs it has seen and emits the MLflow event types; wraps stores and repositories."""

    def __init__(self) -> None:
        self.enabled = True
        self._local = threading.local()
        self._runs: dict[str, dict[str, Any]] = {}  # run_id -> what describes it (see _remember)
        self._flavors: dict[str, list[str]] = {}  # logged model id -> flavours read from its uploaded MLmodel
        self._settings: Any = None
        self.names = NameResolver()
        self.experiments = lifecycle.Experiments()
        self.later = Later()
        self.places = Places(self.later)
        self.metrics = MetricsCoalescer(functools.partial(runs.metrics_event, self), "coalesce", 1.0)
        at_exit(self._settle_at_exit)  # before the clients' exit flush
        self.reconfigure()

    def reconfigure(self, client: Client | None = None) -> None:
        """Apply the settings of ``client`` (default: the current one, e.g. ``capture()``'s); ``on_reconfigure``
        calls this with each new default client."""
        self._apply((client if client is not None else current_client()).settings)

    def _apply(self, settings: Any) -> None:
        self._settings = settings
        self.places.reset(settings)
        self._deny = settings.deny_keys
        self._allow = settings.allow_keys
        self.metrics.mode = settings.metrics_mode
        self.metrics.interval = settings.metrics_interval

    def refresh(self) -> None:
        """Pick up settings replaced since the last run began (``configure()`` again): two attribute reads."""
        settings = current_client().settings
        if settings is not self._settings:
            self._apply(settings)

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until the events deferred to the worker so far are published (tests, exit); True when they are."""
        return self.later.drain(timeout)

    def _settle_at_exit(self) -> None:
        self.settle(5.0)

    # ---- UI URLs ---------------------------------------------------------------------------------

    def _ui(self, uri: str | None) -> urls.Ui:
        return self.places.ui(uri)

    def _uri(self, store: Any) -> str | None:
        return self.places.uri(store)

    def store_ui(self, store: Any) -> urls.Ui:
        """The UI of what a store holds (its URI's; may raise ``NeedsLookup`` off the worker: the workspace URL)."""
        return self.places.ui(self.places.uri(store))

    _store_ui = store_ui

    # ---- plumbing --------------------------------------------------------------------------------

    def _emit(self, event_type: str, data: dict[str, Any]) -> None:
        if self.enabled:
            current_client().emit(event_type, data, id=facts.fact_id(event_type, data))

    emit = _emit  # what the describers of other modules (genai, registry) publish through

    def publish(self, key: Hashable, build: Callable[[], Described]) -> None:
        """Publish what ``build()`` describes: now, unless it needs a lookup (``NeedsLookup``) or an earlier event of
        ``key`` waits on the worker; then on the worker, with this call's time and context."""
        if not self.enabled:
            return
        client = current_client()
        if not self.later.pending(key):
            try:
                described = build()
            except NeedsLookup:
                pass
            else:
                if described is not None:
                    later.send(client, described, None)
                return
        when = time.time_ns()
        if not self.later.submit(key, functools.partial(later.deferred, client, build, when)):
            client.fail(RuntimeError(f"{self.later.max_pending} events wait already"), "mlflow hook worker")

    def _wrap(self, obj: Any, name: str, describe: Callable[..., None]) -> None:
        found = _compat.method_target(obj, name)
        if found is None:
            return
        target, original = found
        local = self._local
        hook = self

        def wrapper(store: Any, /, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            depth = getattr(local, "depth", 0)
            local.depth = depth + 1
            try:
                result = target(store)(*args, **kwargs)
            finally:
                local.depth = depth
            if depth == 0 and hook.enabled:
                try:
                    describe(store, result, *args, **kwargs)
                except Exception as e:  # noqa: BLE001 - a hook bug must never break training
                    current_client().fail(e, f"mlflow hook {name}")
            return result

        _compat.install_method(obj, name, wrapper, original)

    def keep(self, key: str) -> bool:
        """Whether a param or tag key may be published (the deny and allow lists)."""
        low = key.lower()
        if any(fnmatch.fnmatchcase(low, p) for p in self._deny):
            return False
        return not self._allow or any(fnmatch.fnmatchcase(low, p) for p in self._allow)

    # ---- runs ------------------------------------------------------------------------------------

    def _known(self, store: Any, run_id: str) -> dict[str, Any]:
        """What describes a run: known (created here, a ``get_run`` result), else asked of ``store`` on the worker."""
        known = self._runs.get(run_id)
        if known is None:
            if store is None or not self.later.on_worker():
                raise NeedsLookup
            known = self.remember(store.get_run(run_id), store)  # the store the call used, never the default URI
        return known

    def run_base(self, store: Any, run_id: str) -> dict[str, Any]:
        """The fields every run event has. Off the worker, raises ``NeedsLookup`` for a run the hook does not know
        (or a workspace URL not looked up yet): call it from a ``publish`` build."""
        known = self._known(store, run_id)
        known["run_url"] = self._ui(known["uri"]).run_url(known["experiment_id"], run_id)
        return {
            "experiment_id": known["experiment_id"],
            "run_id": run_id,
            "run_name": known["run_name"],
            "artifact_uri": known["artifact_uri"],
            "run_url": known["run_url"],
        }

    _run_base = run_base

    def saw_start(self, run_id: str) -> bool:
        """Whether this run's ``mlflow.run.started`` went out (or is on its way)."""
        known = self._runs.get(run_id)
        return known is not None and bool(known["started"])

    def note_status(self, run_id: str, status: str) -> str | None:
        """Record a known run's new status; return the one it had (None: unknown run)."""
        known = self._runs.get(run_id)
        if known is None:
            return None
        before: str | None = known["status"]
        known["status"] = status
        return before

    def run_start_time(self, run_id: str) -> int | None:
        start = self._runs.get(run_id, {}).get("start_time")
        return start if isinstance(start, int) else None

    def remember(self, run: Any, store: Any = None) -> dict[str, Any]:
        """Remember a run (a ``Run`` or ``RunInfo``): cheap, no lookup (its UI URL is made when an event needs it)."""
        info = getattr(run, "info", run)
        tags = getattr(getattr(run, "data", None), "tags", None) or {}
        before = self._runs.get(info.run_id)
        known = {
            "experiment_id": str(info.experiment_id),
            "start_time": info.start_time,
            "run_name": info.run_name,
            "artifact_uri": artifacts.normal_uri(info.artifact_uri),
            "user": getattr(info, "user_id", None) or None,
            "parent_run_id": tags.get("mlflow.parentRunId") if isinstance(tags, dict) else None,
            "uri": self._uri(store),
            "status": _compat.run_status_name(info.status) if getattr(info, "status", None) is not None else None,
            "started": bool(before and before["started"]),  # its run.started went out
        }
        if before is None and len(self._runs) > 10_000:  # bounded: forget the oldest
            self._runs.pop(next(iter(self._runs)), None)
        self._runs[info.run_id] = known
        return known

    def started(self, store: Any, run_id: str) -> Described:
        """The run's ``mlflow.run.started`` (for a run created elsewhere, from what ``get_run`` says)."""
        known = self._known(store, run_id)
        data = {**self.run_base(store, run_id), "start_time": known["start_time"]}
        data.update(parent_run_id=known["parent_run_id"], user=known["user"])
        known["started"] = True
        return "mlflow.run.started", data

    # ---- tracking store --------------------------------------------------------------------------

    def wrap_tracking(self, store: Any) -> Any:
        if not _compat.mark(store):
            return store
        self.places.note(store)
        for name, describe in (*runs.CALLS, *lifecycle.CALLS, *genai.TRACKING_CALLS):
            self._wrap(store, name, functools.partial(describe, self))
        _compat.rebind_async_queue(store)
        return store

    def flavors_of(self, model_id: str, forget: bool = False) -> list[str] | None:
        """The flavours noted for a logged model (None: none noted); ``forget``: it is finalised."""
        return self._flavors.pop(model_id, None) if forget else self._flavors.get(model_id)

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
        self.places.note(store)
        if uc:  # results that carry the registry's full name teach the resolver, without an event
            described = {name for name, _ in registry.CALLS}  # those teach it through _registry_event
            for name in ("get_registered_model", "get_model_version"):
                if name not in described:
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
        typed = registry.typed_name(action, args, kwargs)
        full = registry.result_name(result) if uc else None
        if full:
            self.names.learn(store, typed, full)

        def resolve(name: str) -> str:  # the resolver's answer; a lookup only on the worker
            if name.count(".") >= 2:
                return name
            if self.later.on_worker():
                return self.names.resolve(store, name)
            known = self.names.known(store, name)
            if known is None:
                raise NeedsLookup
            return known

        def build() -> Described:
            ui = self.store_ui(store) if uc else urls.NO_UI
            described = registry.describe_registry_call(
                action, result, args, kwargs, uc, resolve if uc and not full else None, ui
            )
            if described is not None and "key" in described[1] and not self.keep(str(described[1]["key"])):
                return None  # tags: the deny list, as for run tags
            return described

        self.publish(("registered", self._uri(store), typed), build)

    # ---- artifact repositories ---------------------------------------------------------------------

    def wrap_artifacts(self, repo: Any) -> Any:
        if _compat.is_delegating_repo(repo) or not _compat.mark(repo):
            return repo
        return artifacts.wrap_repo(repo, self._artifacts_event, self.note_flavors)

    def _artifacts_event(self, run_id: str, shown: str | None, tracking_uri: str | None, data: dict[str, Any]) -> None:
        def build() -> Described:
            return "mlflow.run.artifacts", {"experiment_id": self._experiment_of(run_id, shown, tracking_uri), **data}

        self.publish(("run", run_id), build)

    def _experiment_of(self, run_id: str, shown: str | None, tracking_uri: str | None) -> str:
        """A run's experiment: the run's known one, else the one its artifact URI shows, else asked on the worker
        of the tracking store the repository was made for (never the default URI's); unknown: ``""``."""
        known = self._runs.get(run_id)
        if known is not None:
            return str(known["experiment_id"])
        if shown:
            return shown
        if tracking_uri is None:
            return ""
        if not self.later.on_worker():
            raise NeedsLookup
        try:
            return str(self._known(_compat.tracking_store(tracking_uri), run_id)["experiment_id"])
        except Exception:  # noqa: BLE001 - no such run there, no network: the experiment stays unknown
            return ""
