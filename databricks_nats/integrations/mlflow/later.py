"""The hook's worker thread: what an event needs that would cost a lookup is fetched here, never on the caller's thread.

An event whose description needs something the hook does not know yet (a run created elsewhere, a Unity Catalog
model's full name, the workspace URL) is described here instead: one daemon thread, started on first use, runs
the tasks in the order they were submitted (FIFO), each in a copy of the submitting call's ``contextvars``
context, so the causation and trace context of the MLflow call are the event's. The queue is bounded
(``max_pending``): a task submitted to a full queue is refused (``submit`` returns False) and counted in
``dropped``, never waited for. Tasks carry a key (a run, a model): while a key has tasks queued or running,
``pending(key)`` is true, so the hook defers that key's next events too and they are never published ahead of it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from databricks_nats.client import Client
from databricks_nats.errors import DatabricksNatsError
from databricks_nats.integrations.mlflow import facts

__all__ = ["MAX_PENDING", "Later", "NeedsLookup", "deferred", "send"]

log = logging.getLogger("databricks_nats")
MAX_PENDING = 10_000
_EMIT_TAKES_TIME = "time_ns" in inspect.signature(Client.emit).parameters
Described = tuple[str, dict[str, Any]] | None


class NeedsLookup(DatabricksNatsError):
    """Describing this call needs a lookup: it is described on the hook's worker thread instead."""


class Later:
    """One daemon thread running submitted tasks in order, in their submitter's context."""

    def __init__(self, max_pending: int = MAX_PENDING, name: str = "databricks-nats-mlflow") -> None:
        self.max_pending = max_pending
        self.name = name
        self.dropped = 0  # tasks refused because the queue was full
        self.done = 0  # tasks run
        self._cond = threading.Condition(threading.Lock())
        self._tasks: deque[tuple[contextvars.Context, Callable[[], None], Hashable]] = deque()
        self._keys: dict[Hashable, int] = {}  # key -> tasks of it queued or running
        self._busy = 0  # tasks queued or running
        self._thread: threading.Thread | None = None
        if hasattr(os, "register_at_fork"):  # a forked child starts empty: the parent's thread and lock stay behind
            os.register_at_fork(after_in_child=functools.partial(_forget, weakref.ref(self)))

    def _forget(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._tasks.clear()
        self._keys.clear()
        self._busy = 0
        self._thread = None

    def on_worker(self) -> bool:
        """Whether the calling thread is the worker (where lookups are allowed)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def pending(self, key: Hashable) -> bool:
        """Whether tasks of ``key`` are queued or running (a dict read: no lock needed)."""
        return key in self._keys

    def submit(self, key: Hashable, task: Callable[[], None]) -> bool:
        """Queue ``task`` (run in a copy of the current context); False when the queue is full."""
        context = contextvars.copy_context()
        with self._cond:
            if self._busy >= self.max_pending:
                self.dropped += 1
                return False
            self._tasks.append((context, task, key))
            self._keys[key] = self._keys.get(key, 0) + 1
            self._busy += 1
            if self._thread is None or not self._thread.is_alive():  # first use, or a forked child
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return True

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every task submitted so far has run (at most ``timeout`` seconds); True when it has."""
        if self.on_worker():
            return self._busy <= 1
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._tasks:
                    self._cond.wait()
                context, task, key = self._tasks.popleft()
            try:
                context.run(task)
            except Exception:
                log.warning("databricks-nats: an MLflow hook task failed", exc_info=True)
            finally:
                with self._cond:
                    left = self._keys.get(key, 1) - 1
                    if left > 0:
                        self._keys[key] = left
                    else:
                        self._keys.pop(key, None)
                    self._busy -= 1
                    self.done += 1
                    self._cond.notify_all()


def _forget(ref: weakref.ref[Later]) -> None:
    later = ref()
    if later is not None:
        later._forget()


def deferred(client: Client, build: Callable[[], Described], when: int) -> None:
    """A deferred event, on the worker: described now that lookups are allowed, sent with its call's time."""
    try:
        described = build()
        if described is not None:
            send(client, described, when)
    except Exception as e:  # noqa: BLE001 - fail-open; strict mode's raise has no caller to reach here
        try:
            client.fail(e, "mlflow hook (worker)")
        except Exception:
            log.warning("databricks-nats: an MLflow event could not be described", exc_info=True)


def send(client: Client, described: tuple[str, dict[str, Any]], when: int | None) -> None:
    """Emit one event with its fixed id (``facts.fact_id``) and, when it was deferred, its call's time."""
    event_type, data = described
    id = facts.fact_id(event_type, data)
    if when is None:
        client.emit(event_type, data, id=id)
    elif _EMIT_TAKES_TIME:
        emit: Any = client.emit
        emit(event_type, data, id=id, time_ns=when)
    elif id is None:
        client.emit_many([(event_type, data, when)])
    else:  # the fixed id (de-duplication) matters more than the time, until Client.emit takes time_ns
        client.emit(event_type, data, id=id)
