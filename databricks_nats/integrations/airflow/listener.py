"""The Airflow → NATS listener: DAG-run and task-instance state changes as lean ``airflow.*`` pointer events.

Airflow 3.3's listener hooks (pluggy, ``airflow.listeners.spec.dagrun`` in the scheduler / API server and
``airflow.sdk``'s ``taskinstance`` spec in the task process) publish, through the default client
(``databricks_nats.current_client()``, configured as every publisher is: ``DATABRICKS_NATS_*`` or the settings
file):

* ``airflow.dag_run.running|success|failed`` — from the scheduler (``on_dag_run_*``);
* ``airflow.task.running|success|failed|skipped|up_for_retry`` — from the task process. Airflow has no retry
  hook: ``on_task_instance_failed`` is called for a retry too, with the task instance's state
  ``up_for_retry``, which picks the event type.

**Off unless switched on**: ``DATABRICKS_NATS_AIRFLOW_LISTENER=true`` (wins when set) or Airflow's
``[databricks_nats] listener = True`` (``AIRFLOW__DATABRICKS_NATS__LISTENER``). Read once per process.

**Never in the way.** ``emit`` hands the event to the publisher's thread and returns (fail-open: no error
reaches Airflow; every hook also catches everything). The scheduler never waits. A task process flushes once
at its end (success / failed / skipped / retry) for at most ``[databricks_nats] flush_timeout`` seconds
(default 2): a short task must not exit with its events only in memory; what is not acknowledged by then is
in the spool and sent by the next publisher that starts on this host. The publisher is forgotten in a forked
child (``Client`` does it) and started again there on first use.

**Causation.** In a run started by a NATS event (``NatsEventTrigger``), every event carries
``Causation.from_envelope(<that event>, "airflow:dag/<dag_id>")`` (``lineage``); while a task runs, the same
causation is the current one (``caused_by``), so what the task emits (``NatsHook``, ``databricks_nats.emit``)
carries it too.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import functools
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast
from urllib.parse import quote

from airflow.listeners import hookimpl as _hookimpl

from databricks_nats.integrations.airflow.lineage import run_causation
from databricks_nats.model.causation import Causation, caused_by

__all__ = [
    "ENV",
    "enabled",
    "on_dag_run_failed",
    "on_dag_run_running",
    "on_dag_run_success",
    "on_task_instance_failed",
    "on_task_instance_running",
    "on_task_instance_skipped",
    "on_task_instance_success",
]

log = logging.getLogger("databricks_nats")

ENV = "DATABRICKS_NATS_AIRFLOW_LISTENER"
SECTION = "databricks_nats"
_TRUE = ("1", "true", "yes", "on")
_F = TypeVar("_F", bound=Callable[..., None])


def hookimpl(fn: _F) -> _F:
    """Airflow's pluggy ``hookimpl`` marker, typed."""
    return cast(_F, _hookimpl(fn))


def _conf() -> Any:
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # pragma: no cover - a core-only process
        from airflow.configuration import conf
    return conf


@functools.cache
def enabled() -> bool:
    """Switched on: ``DATABRICKS_NATS_AIRFLOW_LISTENER`` (when set), else ``[databricks_nats] listener``."""
    raw = os.environ.get(ENV)
    if raw is not None and raw.strip():
        return raw.strip().lower() in _TRUE
    try:
        return bool(_conf().getboolean(SECTION, "listener", fallback=False))
    except Exception:  # noqa: BLE001 - an unreadable config: off
        return False


@functools.cache
def _flush_timeout() -> float:
    try:
        return max(0.0, float(_conf().getfloat(SECTION, "flush_timeout", fallback=2.0)))
    except Exception:  # noqa: BLE001
        return 2.0


@functools.cache
def _base_url() -> str:
    try:
        return str(_conf().get("api", "base_url", fallback="http://localhost:8080/")).rstrip("/")
    except Exception:  # noqa: BLE001
        return "http://localhost:8080"


def _iso(value: Any) -> str | None:
    if isinstance(value, _dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)).isoformat()
    return None if value is None else str(value)


def _duration_ms(start: Any, end: Any) -> int | None:
    if isinstance(start, _dt.datetime) and isinstance(end, _dt.datetime):
        return max(0, int((end - start).total_seconds() * 1000))
    return None


def _uris(outlets: Iterable[Any] | None) -> list[str]:
    """The URIs of the assets among ``outlets`` (aliases and other objects have none)."""
    out: list[str] = []
    for outlet in outlets or ():
        uri = getattr(outlet, "uri", None)
        if isinstance(uri, str) and uri and uri not in out:
            out.append(uri)
    return out


def _value(state: Any) -> str:
    return str(getattr(state, "value", state) or "")


def _emit(event_type: str, data: dict[str, Any], causation: Causation | None) -> None:
    from databricks_nats.client import current_client

    current_client().emit(event_type, data, causation=causation)


def _flush() -> None:
    from databricks_nats.client import current_client

    try:
        current_client().flush(_flush_timeout())
    except Exception as e:  # noqa: BLE001 - strict mode raises on timeout: the spool keeps the events anyway
        log.debug("databricks-nats: flush at task end: %s", type(e).__name__)


# ---- DAG runs (scheduler, API server) ------------------------------------------------------------------


def _dag_run(action: str, dag_run: Any) -> None:
    if not enabled():
        return
    try:
        dag_id, run_id = str(dag_run.dag_id), str(dag_run.run_id)
        produced: list[str] = []
        if action == "success":
            dag = getattr(dag_run, "dag", None)
            for task in getattr(dag, "tasks", None) or ():
                produced += [u for u in _uris(getattr(task, "outlets", None)) if u not in produced]
        data = {
            "dag_id": dag_id,
            "run_id": run_id,
            "state": _value(dag_run.state) or action,
            "logical_date": _iso(getattr(dag_run, "logical_date", None)),
            "run_type": _value(getattr(dag_run, "run_type", None)) or None,
            "duration_ms": _duration_ms(getattr(dag_run, "start_date", None), getattr(dag_run, "end_date", None)),
            "url": f"{_base_url()}/dags/{quote(dag_id)}/runs/{quote(run_id)}",
            "assets": produced,
        }
        _emit(f"airflow.dag_run.{action}", data, run_causation(dag_run, dag_id))
    except Exception as e:  # noqa: BLE001 - never into the scheduler
        log.warning("databricks-nats: airflow.dag_run.%s not published: %s: %s", action, type(e).__name__, e)


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    _dag_run("running", dag_run)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _dag_run("success", dag_run)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _dag_run("failed", dag_run)


# ---- task instances (the task process; the API server when a user sets a state) ---------------------------

_inside: contextvars.ContextVar[Any] = contextvars.ContextVar("databricks_nats_airflow_task", default=None)


def _ti_dag_run(ti: Any) -> Any:
    from_server = getattr(ti, "_ti_context_from_server", None)  # the task SDK's RuntimeTaskInstance
    if from_server is not None:
        return getattr(from_server, "dag_run", None)
    return getattr(ti, "dag_run", None)  # the ORM TaskInstance


def _task(action: str, ti: Any, *, end: bool) -> None:
    if not enabled():
        return
    try:
        dag_run = _ti_dag_run(ti)
        dag_id, run_id, task_id = str(ti.dag_id), str(ti.run_id), str(ti.task_id)
        map_index = getattr(ti, "map_index", None)
        try_number = getattr(ti, "try_number", None)
        suffix = f"/mapped/{map_index}" if isinstance(map_index, int) and map_index >= 0 else ""
        query = f"?try_number={try_number}" if isinstance(try_number, int) and try_number > 0 else ""
        task = getattr(ti, "task", None)
        data = {
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "try_number": try_number if isinstance(try_number, int) else None,
            "map_index": map_index if isinstance(map_index, int) and map_index >= 0 else None,
            "state": action,
            "logical_date": _iso(getattr(dag_run, "logical_date", None) or getattr(ti, "logical_date", None)),
            "run_type": _value(getattr(dag_run, "run_type", None)) or None,
            "duration_ms": _duration_ms(getattr(ti, "start_date", None), getattr(ti, "end_date", None))
            if end
            else None,
            "url": f"{_base_url()}/dags/{quote(dag_id)}/runs/{quote(run_id)}/tasks/{quote(task_id)}{suffix}{query}",
            "assets": _uris(getattr(task, "outlets", None)) if action == "success" else [],
        }
        cause = run_causation(dag_run, dag_id)
        _emit(f"airflow.task.{action}", data, cause)
        if not end and cause is not None and _inside.get() is None:
            # What the task emits while it runs is caused by the same event (closed when the task ends).
            block = caused_by(cause)
            block.__enter__()
            _inside.set(block)
    except Exception as e:  # noqa: BLE001 - never into the task
        log.warning("databricks-nats: airflow.task.%s not published: %s: %s", action, type(e).__name__, e)
    if end:
        _leave()
    if end and hasattr(ti, "_ti_context_from_server"):  # a task process (not the API server: it never waits)
        _flush()


def _leave() -> None:
    """Close the task's causation block (``dag.test()`` runs every task in one process)."""
    block = _inside.get()
    if block is not None:
        _inside.set(None)
        block.__exit__(None, None, None)


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    _task("running", task_instance, end=False)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _task("success", task_instance, end=True)


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    retry = _value(getattr(task_instance, "state", None)) == "up_for_retry"
    _task("up_for_retry" if retry else "failed", task_instance, end=True)


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    _task("skipped", task_instance, end=True)
