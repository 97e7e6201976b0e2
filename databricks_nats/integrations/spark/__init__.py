"""Spark listeners, table pointers and the event log as a DataFrame (public surface: ``databricks_nats.spark``).

``attach(spark)`` registers a streaming listener on the session (classic and Spark Connect) and, when
the session has a JVM, a job listener on its SparkContext (one per application, shared by its
sessions). Attaching twice is a no-op; ``detach`` removes both; listeners are removed at interpreter
exit before py4j goes away.

On Spark Connect (Databricks serverless, standard access mode) there is no JVM on the client: job and
SQL execution events are not available, which ``attach`` says once at WARNING and reports to
``databricks_nats.status`` (``spark.jobs`` not live, ``spark.streams`` live). The streaming listener
carries the resolved settings (credentials included, always masked) and the event context captured
here, so it can publish where the server runs it (see ``streaming``).
"""

from __future__ import annotations

import atexit
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from databricks_nats import status
from databricks_nats.client import current_client
from databricks_nats.integrations.spark import _compat, runs
from databricks_nats.integrations.spark.eventlog import EVENT_LOG_SCHEMA, read_events
from databricks_nats.integrations.spark.jobs import ExecutionTracker, JobListener
from databricks_nats.integrations.spark.streaming import NatsStreamingListener
from databricks_nats.integrations.spark.tables import table_updated

__all__ = [
    "EVENT_LOG_SCHEMA",
    "Attachment",
    "attach",
    "attached",
    "attached_sessions",
    "detach",
    "read_events",
    "settle",
    "table_updated",
]

log = logging.getLogger("databricks_nats.spark")


@dataclass
class _JobHook:
    listener: JobListener
    proxies: list[Any]  # the JVM listeners registered for it
    sessions: set[int] = field(default_factory=set)


@dataclass
class Attachment:
    """What ``attach`` registered on one session."""

    spark: Any
    app_id: str
    streaming: NatsStreamingListener
    jobs: JobListener | None


_lock = threading.RLock()
_sessions: dict[int, Attachment] = {}
_jobs: dict[str, _JobHook] = {}
_exit_hook = False
_connect_warned = False
NO_JOBS = "Spark Connect: no JVM listener on this compute"


def _session(spark: Any) -> Any:
    if spark is not None:
        return spark
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None:
        raise ValueError("attach(): no active SparkSession; pass one")
    return active


def _event_context(settings: Any) -> dict[str, Any]:
    """The context events carry (workspace, env, compute, notebook, job and run ids), detected here, now."""
    context: dict[str, Any] = current_client().context_provider.detect(settings)[1]  # never raises
    return context


def attach(
    spark: Any = None,
    *,
    progress_interval: float | None = None,
    min_execution_ms: int | None = None,
    summary_interval: float | None = None,
    tables: dict[str, str] | None = None,
) -> Attachment:
    """Register the listeners on ``spark`` (default: the active session); idempotent.

    The volume policy comes from the settings ``spark_progress_interval`` (10 s), ``spark_min_execution_ms``
    (1000) and ``spark_summary_interval`` (30 s) unless given here.

    ``tables`` maps a streaming query's name (or id) to the full name of the table its sink writes, so
    its ``data.table.updated`` pointers name the table rather than the sink's path.
    """
    global _exit_hook
    spark = _session(spark)
    settings = current_client().settings
    progress_interval = settings.spark_progress_interval if progress_interval is None else progress_interval
    min_execution_ms = settings.spark_min_execution_ms if min_execution_ms is None else min_execution_ms
    summary_interval = settings.spark_summary_interval if summary_interval is None else summary_interval
    context = _event_context(settings)  # outside the lock: detection may wait for the Databricks SDK (once)
    with _lock:
        have = _sessions.get(id(spark))
        if have is not None:
            return have
        app = _compat.app_id(spark)
        job = _attach_jobs(spark, app, min_execution_ms, summary_interval)
        run_ids = job.listener.tracker.stream_runs if job is not None else {}
        streaming = NatsStreamingListener(progress_interval, tables, run_ids, settings, context)
        _compat.ensure_callback_server(spark)  # classic: a streaming listener is a py4j callback too
        spark.streams.addListener(streaming)
        if job is not None:
            job.sessions.add(id(spark))
        found = _sessions[id(spark)] = Attachment(spark, app, streaming, job.listener if job else None)
        runs.watch(spark)
        if not _exit_hook:
            atexit.register(detach_all)
            _exit_hook = True
        return found


def _attach_jobs(spark: Any, app: str, min_execution_ms: int, summary_interval: float) -> _JobHook | None:
    global _connect_warned
    if not _compat.has_jvm(spark):
        status.report_family("spark.jobs", False, NO_JOBS)
        status.report_family(
            "spark.streams",
            True,
            "Spark Connect: streaming listener, run "
            + ("by the server in a process of its own" if _compat.listener_runs_on_server() else "in this process"),
        )
        if not _connect_warned:
            _connect_warned = True
            log.warning(
                "databricks-nats: Spark Connect session: no JVM listener on this compute, so Spark job and SQL "
                "execution events are not published; streaming query events are"
            )
        return None
    status.report_family("spark.streams", True, "classic session: streaming listener in this process")
    hook = _jobs.get(app)
    if hook is None:
        listener = JobListener(ExecutionTracker(app, min_execution_ms, summary_interval))
        try:
            proxies = _compat.add_listener(spark, listener)
        except Exception as e:  # noqa: BLE001 - streaming events still work without the job listener
            listener.stop()
            log.warning("databricks-nats: could not register the Spark job listener: %s", e)
            status.report_family("spark.jobs", False, f"the job listener could not be registered: {e}"[:300])
            return None
        hook = _jobs[app] = _JobHook(listener, proxies)
    status.report_family("spark.jobs", True, "classic session: JVM listener")
    return hook


def attached(spark: Any = None) -> Attachment | None:
    """The attachment of ``spark`` (default: the active session), or None."""
    with _lock:
        return _sessions.get(id(_session(spark)))


def attached_sessions() -> list[Any]:
    """Every session with listeners attached in this process."""
    with _lock:
        return [a.spark for a in _sessions.values()]


def detach(spark: Any = None, timeout: float = 5.0) -> None:
    """Remove the listeners from ``spark``; pending execution summaries are published first."""
    spark = _session(spark)
    with _lock:
        found = _sessions.pop(id(spark), None)
        if found is None:
            return
        runs.unwatch(spark)
        _compat.drain_bus(spark, timeout)
        try:
            spark.streams.removeListener(found.streaming)
        except Exception as e:  # noqa: BLE001 - a stopped session has no listeners left to remove
            log.debug("databricks-nats: removing the streaming listener: %s", e)
        hook = _jobs.get(found.app_id)
        if hook is None:
            return
        hook.sessions.discard(id(spark))
        if hook.sessions:
            return
        del _jobs[found.app_id]
    try:
        _compat.remove_listener(spark, hook.proxies)
    except Exception as e:  # noqa: BLE001 - the SparkContext may already be stopped
        log.debug("databricks-nats: removing the job listener: %s", e)
    hook.listener.drain(timeout)
    hook.listener.tracker.flush_summary()
    hook.listener.stop()


def settle(spark: Any = None, timeout: float = 10.0) -> bool:
    """Wait until every Spark event posted so far has been turned into events (tests, notebooks, detach)."""
    spark = _session(spark)
    done = _compat.drain_bus(spark, timeout)
    found = attached(spark)
    if found is not None and found.jobs is not None:
        done = found.jobs.drain(timeout) and done
    return done


def detach_all() -> None:
    """Detach every session (at interpreter exit, before the py4j callback server goes away)."""
    with _lock:
        sessions = [a.spark for a in _sessions.values()]
    for spark in sessions:
        try:
            detach(spark, timeout=1.0)
        except Exception as e:  # noqa: BLE001 - exit must not fail
            log.debug("databricks-nats: detach at exit: %s", e)
