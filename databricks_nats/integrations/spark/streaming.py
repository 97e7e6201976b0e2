"""The Structured Streaming listener: ``spark.stream.*`` events and table pointers, classic and Connect.

Volume policy, per query: ``started`` and ``terminated`` always; ``progress`` at most once per
``progress_interval`` (default 10 s), except that the first batch with data after an idle period (or
the query's first) is always published at once; each published progress carries how many batches and
input rows it stands for. ``idle`` once per idle period. A published progress whose sink wrote rows
into a file or Delta table also publishes ``data.table.updated``. Batches held back when a query
terminates are published with the ``terminated`` event's final progress.

On Spark Connect this object is pickled and run next to the server's session: it touches nothing but
its own attributes and the ``databricks_nats`` package (no outer variables), and configures the
process-wide publisher there from the non-secret settings it carries if none is configured.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from pyspark.sql.streaming.listener import StreamingQueryListener

from databricks_nats.integrations.spark.jobs import error_class

__all__ = ["NatsStreamingListener", "sink_table"]

MAX_SOURCES = 10
MAX_DESCRIPTION = 256
_SINK = re.compile(r"^(FileSink|DeltaSink)\[(.+)\]$")


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
    """Publishes ``spark.stream.started|progress|idle|terminated`` for every query of a session."""

    def __init__(
        self,
        progress_interval: float = 10.0,
        tables: dict[str, str] | None = None,
        run_ids: dict[str, str | None] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.progress_interval = progress_interval
        self.tables = dict(tables or {})  # query name or id -> table full name for its sink
        self.run_ids = run_ids if run_ids is not None else {}  # query id -> MLflow run id (job listener)
        self.settings = dict(settings or {})
        self._queries: dict[str, _Query] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _emit(self, event_type: str, data: dict[str, Any]) -> None:
        from databricks_nats import _api

        if _api._transport is None and self.settings:
            try:
                _api.configure(**self.settings)  # Spark Connect: a fresh process next to the session
            except Exception as e:  # noqa: BLE001 - fail-open: emit falls back to the environment's settings
                _api.log.warning("databricks-nats: Spark Connect listener could not configure: %s", e)
        _api.emit(event_type, data)

    def _base(self, qid: Any, run_id: Any, name: Any) -> dict[str, Any]:
        query_id = str(qid)
        return {
            "query_id": query_id,
            "run_id": str(run_id),
            "name": name or None,
            "mlflow_run_id": self.run_ids.get(query_id),
        }

    def onQueryStarted(self, event: Any) -> None:
        with self._lock:
            self._queries[str(event.id)] = _Query()
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


def _row_dict(row: Any) -> Any:
    as_dict = getattr(row, "asDict", None)
    return as_dict() if callable(as_dict) else row
