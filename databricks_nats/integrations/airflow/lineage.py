"""Which NATS event started a DAG run, and the causation of what the run emits (no Airflow import here).

A DAG run started by ``NatsEventTrigger`` consumed asset events whose ``extra["payload"]`` is the CloudEvent
as published, causation attributes included (``id``, ``type``, ``causationid``, ``correlationid``, ``hop``,
``via``). Both sides of Airflow expose them as ``dag_run.consumed_asset_events`` (the scheduler's ORM
``DagRun`` and the task SDK's ``DagRun`` a task process receives), each with an ``extra``.

Everything the run emits (the listener's ``airflow.*`` events, ``NatsHook`` / ``NatsPublishOperator``) is caused
by the **newest** of those events (the last in stream time: Airflow may merge a burst into one run), reached
through ``airflow:dag/<dag_id>``. A run not started by a NATS event has no causation: its events start a chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from databricks_nats.integrations.airflow.events import cloudevents
from databricks_nats.model.causation import Causation

__all__ = ["context_causation", "dag_target", "run_causation", "triggering_envelope"]


def dag_target(dag_id: str) -> str:
    """The reactor name of a DAG in ``via`` and in ``LoopGuard``: ``airflow:dag/<dag_id>``."""
    return f"airflow:dag/{dag_id}"


def _consumed(dag_run: Any) -> list[Any]:
    try:
        events = getattr(dag_run, "consumed_asset_events", None)
        return list(events or [])
    except Exception:  # noqa: BLE001 - a detached ORM object, a server without the field: no causation
        return []


def triggering_envelope(dag_run: Any) -> dict[str, Any] | None:
    """The newest CloudEvent among the run's consumed asset events, or None (not started by a NATS event)."""
    if dag_run is None:
        return None
    events = cloudevents(_consumed(dag_run))
    if not events:
        return None
    return max(events, key=lambda e: str(e.get("time") or ""))  # ISO 8601 UTC: text order is time order


def run_causation(dag_run: Any, dag_id: str | None = None) -> Causation | None:
    """The causation of events emitted in ``dag_run`` (None for a run no NATS event started)."""
    envelope = triggering_envelope(dag_run)
    if envelope is None:
        return None
    dag = dag_id or getattr(dag_run, "dag_id", None)
    return Causation.from_envelope(envelope, dag_target(str(dag)) if dag else None)


def context_causation(context: Mapping[str, Any] | None) -> Causation | None:
    """The causation from a task's Airflow context (its ``dag_run``), or None."""
    if not context:
        return None
    dag_run = context.get("dag_run")
    return run_causation(dag_run, getattr(dag_run, "dag_id", None))
