"""One name per Unity Catalog model: the three-level name the registry resolved, whatever the caller typed.

``create_registered_model('my_model')`` on ``databricks-uc`` returns ``main.default.my_model``; alias, tag and
delete calls return nothing that names the model. The resolver learns ``typed -> full`` from every result that
carries a name (registered, version created, get) and, for a name it has not seen, asks the registry once —
``store.get_registered_model(typed)``, through the store the call used, after that call succeeded. The answer
(or, when the lookup fails, the typed name) is cached per registry and name, bounded; a failure is logged at
WARNING once per client (then at DEBUG) and counted in ``fallbacks``; it never raises.
``resolve`` is called on the hook's worker thread only (``later.py``; the MLflow caller never waits for it:
off the worker the hook uses ``known`` and defers the event when the name is not known). The worker waits at
most ``timeout`` seconds (MLflow's own retries could take minutes during an outage), so the events queued
behind it are not held longer: a lookup still running then is a fallback for this event, and its answer, when
it comes, is learned for the next.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from databricks_nats.client import Client, current_client
from databricks_nats.integrations.mlflow import _compat

__all__ = ["NameResolver"]

log = logging.getLogger("databricks_nats")
MAX_NAMES = 4096
TIMEOUT = 10.0


class NameResolver:
    """Typed model name -> the registry's full name, per registry URI; learned or looked up once."""

    def __init__(self, max_names: int = MAX_NAMES, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self._names: dict[tuple[str, str], str] = {}
        self._max = max_names
        self._lock = threading.Lock()
        self.lookups = 0  # registry round trips made
        self.fallbacks = 0  # lookups that failed: the typed name was used
        self._warned: weakref.ref[Client] | None = None  # the client the last warning went out under

    @staticmethod
    def _key(store: Any, typed: str) -> tuple[str, str]:
        return (_compat.store_uri(store) or "", typed)

    def _put(self, key: tuple[str, str], full: str) -> None:
        with self._lock:
            if key not in self._names and len(self._names) >= self._max:  # bounded: forget the oldest
                self._names.pop(next(iter(self._names)))
            self._names[key] = full

    def learn(self, store: Any, typed: str, full: str) -> None:
        """A result told us the full name of a typed name."""
        if typed and full and typed != full:
            self._put(self._key(store, typed), full)

    def known(self, store: Any, typed: str) -> str | None:
        """What the resolver holds for ``typed`` (None: never seen)."""
        return self._names.get(self._key(store, typed))

    def resolve(self, store: Any, typed: str) -> str:
        """The full name of ``typed`` (itself when already three-level, or when the lookup failed)."""
        if not typed or typed.count(".") >= 2:
            return typed
        key = self._key(store, typed)
        known = self._names.get(key)
        if known is not None:
            return known
        self.lookups += 1
        answer: list[str | Exception] = []

        def lookup() -> None:
            value: str | Exception
            try:
                value = _compat.registered_model_name(store, typed) or typed
            except Exception as e:  # noqa: BLE001 - a deleted model, no permission, no network: the typed name
                value = e
            answer.append(value)
            if timed_out.is_set() and isinstance(value, str):  # too late for the event that asked: the next has it
                self.learn(store, typed, value)

        timed_out = threading.Event()
        worker = threading.Thread(target=lookup, name="databricks-nats-uc-name", daemon=True)
        worker.start()
        worker.join(self.timeout)
        timed_out.set()
        full: str | Exception = answer[0] if answer else TimeoutError(f"no answer in {self.timeout:g} s")
        if isinstance(full, Exception):
            e = full
            self.fallbacks += 1
            client = current_client()
            level = logging.WARNING if self._warned is None or self._warned() is not client else logging.DEBUG
            self._warned = weakref.ref(client)
            log.log(
                level,
                "databricks-nats: cannot resolve the Unity Catalog name of model %r (%s); its events use the "
                "name as typed (%d such model(s) so far)",
                typed[:200],
                type(e).__name__,
                self.fallbacks,
            )
            with self._lock:  # not asked again; a late answer (or a result naming it) replaces it
                if key not in self._names and len(self._names) < self._max:
                    self._names[key] = typed
            return typed
        self._put(key, full)
        return full
