"""The Structured Streaming listener: ``spark.stream.*`` events and table pointers, classic and Connect.

Volume policy, per query: ``started`` and ``terminated`` always; ``progress`` at most once per
``progress_interval`` (default 10 s), except that the first batch with data after an idle period (or
the query's first) is always published at once; each published progress carries how many batches and
input rows it stands for. ``idle`` once per idle period. A published progress whose sink wrote rows
into a file or Delta table also publishes ``data.table.updated``. Batches held back when a query
terminates are published with the ``terminated`` event's final progress. Every event names the query
(the name ``started`` gave, also for ``idle`` and ``terminated``) and the MLflow run active when it
started (see ``runs``).

Where it runs, and what it carries:

* Classic sessions and PySpark 4 Spark Connect clients run the listener in the process that attached
  it: it publishes through the default client (``current_client()``), like everything else there.
* A PySpark 3.5 Spark Connect client (Databricks serverless and standard access mode on runtimes up to
  16.4) cloudpickles the listener and the server runs it in a Python process of its own, with none of
  the notebook's variables or environment. So the listener carries what it needs to publish from there,
  captured by ``attach``: the resolved ``Settings`` — **credentials included** — and the event context
  (workspace, env, compute, notebook, job and run ids). Decision: the secret travels inside the pickled
  listener, over the session's authenticated channel (the same channel that carries the notebook's
  code and data), as a ``Secret`` object, masked in every repr, log line and error. A secret *scope*
  (``secret_scope``) or a ``{{secrets/<scope>/<key>}}`` reference travels as the name or reference
  only and is read where the listener runs (databricks-sdk, with that process's Databricks auth). On
  first use there, the listener sets up the default client from what it carries (never
  replacing one already configured). Its spool directory must be writable there: if the configured one
  cannot be created, a temporary directory is used and a WARNING says so once; anything else missing
  (no settings carried, secrets to read from a scope without databricks-sdk there) is also said once
  at WARNING.

The listener touches nothing but its own attributes and the ``databricks_nats`` package (no outer
variables); its ``repr`` names the server (credentials redacted), namespace and credential kinds only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from typing import Any

from pyspark.sql.streaming.listener import StreamingQueryListener

from databricks_nats.client import adopt, current_client
from databricks_nats.integrations.spark import _compat
from databricks_nats.integrations.spark.jobs import error_class
from databricks_nats.settings import Settings
from databricks_nats.values import redact_url

__all__ = ["NatsStreamingListener", "sink_table"]

log = logging.getLogger("databricks_nats.spark")
MAX_SOURCES = 10
MAX_DESCRIPTION = 256
_SINK = re.compile(r"^(FileSink|DeltaSink)\[(.+)\]$")
_PROCESS = uuid.uuid4().hex  # this interpreter: a listener unpickled in another one sees a different value
_SECRETS = ("creds", "token", "password", "nkey_seed", "tls_key")
_PICKLED = frozenset({"progress_interval", "tables", "settings", "context", "origin", "_id"})


def _here() -> tuple[str, int]:
    return _PROCESS, os.getpid()


def sink_table(description: str) -> tuple[str, str | None] | None:
    """(location, format) of a file or Delta sink from its progress description, else None."""
    found = _SINK.match(description or "")
    if not found:
        return None
    return found.group(2), "delta" if found.group(1) == "DeltaSink" else None


class _Query:
    __slots__ = ("batches", "idle", "idle_sent", "last_sent", "pending", "rows")

    def __init__(self) -> None:
        self.last_sent = float("-inf")
        self.idle = True  # the first batch with data is always published
        self.idle_sent = False
        self.batches = 0
        self.rows = 0
        self.pending: Any = None  # the latest progress held back by the interval


class NatsStreamingListener(StreamingQueryListener):
    """Publishes ``spark.stream.started|progress|idle|terminated`` for every query of a session.

    ``settings`` and ``context`` are what the listener publishes with when it runs in another process
    (see the module docstring); in the process that made it, the default client is used.
    """

    def __init__(
        self,
        progress_interval: float = 10.0,
        tables: dict[str, str] | None = None,
        run_ids: dict[str, str | None] | None = None,
        settings: Settings | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        self.progress_interval = progress_interval
        self.tables = dict(tables or {})  # query name or id -> table full name for its sink
        self.run_ids = run_ids if run_ids is not None else {}  # query id -> MLflow run id
        self.settings = settings
        self.context = dict(context or {})
        self.origin = _here()
        self._names: dict[str, str | None] = {}  # query id -> name, from its started event
        self._queries: dict[str, _Query] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Our own state and PySpark's listener id; never a session or a py4j object PySpark attached."""
        state = {k: v for k, v in self.__dict__.items() if k in _PICKLED}
        with self._lock:
            state["run_ids"] = dict(self.run_ids)
            state["_names"] = dict(self._names)
            state["_queries"] = dict(self._queries)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        s = self.settings
        if s is None:
            return "NatsStreamingListener(settings of the process it runs in)"
        kinds = [k for k in _SECRETS if getattr(s, k) is not None] + (["user"] if s.user else [])
        if s.secret_scope:
            kinds.append(f"secret scope {s.secret_scope!r}")
        return (
            f"NatsStreamingListener(url={[redact_url(u) for u in s.url]!r}, namespace={s.namespace!r}, "
            f"credentials={'+'.join(kinds) or 'none'})"
        )

    __str__ = __repr__

    def _local(self) -> bool:
        """True when running in the process that created it (classic, PySpark 4 Connect)."""
        return bool(self.origin == _here())

    def _emit(self, event_type: str, data: dict[str, Any]) -> None:
        if not self._local():
            publish_here(self.settings, self.context)  # Spark Connect, server side: a fresh process
        current_client().emit(event_type, data)

    def _base(self, qid: Any, run_id: Any, name: Any) -> dict[str, Any]:
        query_id = str(qid)
        return {
            "query_id": query_id,
            "run_id": str(run_id),
            "name": name or self._names.get(query_id),
            "mlflow_run_id": self.run_ids.get(query_id),
        }

    def _started_run(self, event: Any) -> str | None:
        """The MLflow run active where the query was started (job tags, the session conf, this thread)."""
        try:
            local = self._local()
            found = _compat.started_run_id(event, None if local else getattr(self, "spark", None))
            if found is None and local:
                from databricks_nats.integrations.spark.runs import current_run_id

                found = current_run_id()
            return found
        except Exception as e:  # noqa: BLE001 - correlation is best effort
            log.debug("databricks-nats: no MLflow run id for the query: %s", e)
            return None

    def onQueryStarted(self, event: Any) -> None:
        qid = str(event.id)
        run = self._started_run(event)
        with self._lock:
            self._queries[qid] = _Query()
            self._names[qid] = event.name or None
            if run is not None:
                self.run_ids[qid] = run
        self._emit("spark.stream.started", self._base(event.id, event.runId, event.name))

    def onQueryProgress(self, event: Any) -> None:
        p = event.progress
        now = time.monotonic()
        with self._lock:
            q = self._queries.setdefault(str(p.id), _Query())
            has_data = (p.numInputRows or 0) > 0
            q.batches += 1
            q.rows += p.numInputRows or 0
            send = (has_data and q.idle) or now - q.last_sent >= self.progress_interval
            q.idle = not has_data
            if has_data:
                q.idle_sent = False
            if not send:
                q.pending = p
                return
            batches, rows = q.batches, q.rows
            q.batches = q.rows = 0
            q.last_sent, q.pending = now, None
        self._publish_progress(p, batches, rows)

    def _publish_progress(self, p: Any, batches: int, rows: int) -> None:
        sink = p.sink
        data = {
            **self._base(p.id, p.runId, p.name),
            "batch_id": p.batchId,
            "input_rows": p.numInputRows,
            "input_rows_per_second": p.inputRowsPerSecond,
            "processed_rows_per_second": p.processedRowsPerSecond,
            "trigger_ms": p.batchDuration,
            "batches": batches,
            "rows_since_last": rows,
            "sources": [
                {
                    "description": (s.description or "")[:MAX_DESCRIPTION],
                    "input_rows": s.numInputRows,
                    "input_rows_per_second": s.inputRowsPerSecond,
                }
                for s in (p.sources or [])[:MAX_SOURCES]
            ],
            "source_count": len(p.sources or []),
            "sink": {"description": (sink.description or "")[:MAX_DESCRIPTION], "output_rows": sink.numOutputRows},
            "state_rows": sum(op.numRowsTotal for op in (p.stateOperators or [])),
            "observed_metrics": {k: _row_dict(v) for k, v in list((p.observedMetrics or {}).items())[:20]},
        }
        self._emit("spark.stream.progress", data)
        table = sink_table(sink.description)
        if table is not None and (sink.numOutputRows != 0 or rows > 0):
            location, fmt = table
            name = self.tables.get(p.name or "") or self.tables.get(str(p.id)) or location
            self._emit(
                "data.table.updated",
                {
                    "table": name,
                    "location": location,
                    "format": fmt,
                    "version": None,
                    "operation": "STREAMING UPDATE",
                    "query_id": str(p.id),
                    "batch_id": p.batchId,
                    "mlflow_run_id": self.run_ids.get(str(p.id)),
                },
            )

    def onQueryIdle(self, event: Any) -> None:
        with self._lock:
            q = self._queries.setdefault(str(event.id), _Query())
            q.idle = True
            if q.idle_sent:
                return
            q.idle_sent = True
        self._emit("spark.stream.idle", self._base(event.id, event.runId, None))

    def onQueryTerminated(self, event: Any) -> None:
        with self._lock:
            q = self._queries.pop(str(event.id), None)
        if q is not None and q.pending is not None:
            self._publish_progress(q.pending, q.batches, q.rows)
        error = getattr(event, "exception", None)
        data = {
            **self._base(event.id, event.runId, None),
            "error": (error or "")[:1000] or None,
            "error_class": (getattr(event, "errorClassOnException", None) or error_class(error)) if error else None,
        }
        self._emit("spark.stream.terminated", data)
        with self._lock:
            self._names.pop(str(event.id), None)
            self.run_ids.pop(str(event.id), None)


def _row_dict(row: Any) -> Any:
    as_dict = getattr(row, "asDict", None)
    return as_dict() if callable(as_dict) else row


_setup_lock = threading.Lock()
_setup_done = False


def publish_here(settings: Settings | None, context: dict[str, Any] | None) -> None:
    """Set up this process's publisher from what a shipped listener carries, once per process; never raises.

    A publisher already configured in this process stands. Says once at WARNING what is missing.
    """
    global _setup_done
    if _setup_done:
        return
    with _setup_lock:
        if _setup_done:
            return
        _setup_done = True
        try:
            _install(settings, context)
        except Exception as e:  # noqa: BLE001 - fail-open: emit falls back to this process's environment
            log.warning(
                "databricks-nats: the streaming listener could not set up publishing in this process (%s: %s); "
                "this process's environment decides",
                type(e).__name__,
                e,
            )


def _install(settings: Settings | None, context: dict[str, Any] | None) -> None:
    if settings is None:
        log.warning(
            "databricks-nats: this streaming listener runs in a process of its own but carries no settings; "
            "publishing with that process's environment (DATABRICKS_NATS_*), which may not reach NATS"
        )
        return
    settings = usable_spool(settings)
    remote = _read_remotely(settings)
    if remote is not None:
        try:
            import databricks.sdk  # noqa: F401
        except ImportError:
            log.warning(
                "databricks-nats: the streaming listener's credentials are %s, read with databricks-sdk, which "
                "this process (where Spark Connect runs the listener) lacks: pip install databricks-sdk there",
                remote,
            )
    if not adopt(settings, context):  # this process already publishes: its configuration stands
        return
    log.info(
        "databricks-nats: streaming listener publishing from process %d to %s as %s (spool %s)",
        os.getpid(),
        ", ".join(redact_url(u) for u in settings.url),
        settings.namespace,
        settings.spool_path,
    )


_REFERENCE = re.compile(r"\{\{\s*secrets/")


def _read_remotely(settings: Settings) -> str | None:
    """What of the credentials is read from a Databricks secret scope where the listener runs (names only)."""
    refs = [k for k in _SECRETS if (v := getattr(settings, k)) is not None and _REFERENCE.search(v.reveal())]
    if refs:
        return "{{secrets/…}} references (" + ", ".join(refs) + ")"
    if settings.secret_scope and not any(getattr(settings, k) is not None for k in _SECRETS):
        return f"in secret scope {settings.secret_scope!r}"
    return None


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def usable_spool(settings: Settings) -> Settings:
    """``settings`` with a spool directory this process can write: the configured one, else a temporary one."""
    if _writable(settings.spool_path):
        return settings
    fallback = dataclasses.replace(settings, spool_dir=os.path.join(tempfile.gettempdir(), "databricks-nats", "spool"))
    if not _writable(fallback.spool_path):
        return settings  # the publisher's spool falls back to memory, and says so
    log.warning(
        "databricks-nats: spool directory %s cannot be created or written in this process; using %s",
        settings.spool_path,
        fallback.spool_path,
    )
    return fallback
