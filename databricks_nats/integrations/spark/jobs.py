"""The job listener (classic clusters): one event per SQL execution or action, never one per task.

Volume policy: a failed execution is always published (``spark.execution.failed``). A successful one
lasting at least ``min_execution_ms`` (default 1 s) is published as ``spark.execution.succeeded``;
shorter ones are counted into one ``spark.execution.summary`` per ``summary_interval`` (default 30 s),
sent only when there was something to count. Micro-batches of streaming queries are left to the
streaming listener (they carry ``sql.streaming.queryId``), but their MLflow run id is remembered so
stream events can name it.

The JVM calls the listener on Spark's listener bus thread and waits for it, so the callbacks only hand
the event reference to a queue (bounded; overflow is counted); a worker thread reads the few fields we
publish and decides.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from typing import Any

from databricks_nats import _api
from databricks_nats.integrations.spark import _compat

__all__ = ["ExecutionTracker", "JobListener"]

log = logging.getLogger("databricks_nats.spark")
MAX_ERROR = 1000
_ERROR_CLASS = re.compile(r"\[([A-Z][A-Z0-9_.]+)\]")


def error_class(message: str | None) -> str | None:
    """Spark's error class (``[DIVIDE_BY_ZERO] …``) when the message carries one."""
    found = _ERROR_CLASS.search(message or "")
    return found.group(1) if found else None


class _Execution:
    __slots__ = ("description", "error", "execution_id", "group", "jobs", "kind", "run_id", "stages", "start")
    # each property read is a py4j call: an execution's group, description and run come from its first job

    def __init__(self, kind: str, execution_id: int | None, description: str, start: int) -> None:
        self.kind = kind
        self.execution_id = execution_id
        self.description = description
        self.start = start
        self.jobs = 0
        self.stages = 0
        self.group: str | None = None
        self.run_id: str | None = None
        self.error: str | None = None

    def add_job(self, stages: int, props: _compat.Props) -> None:
        self.jobs += 1
        self.stages += stages
        if self.jobs == 1:
            self.group = props.get("spark.jobGroup.id")
            self.run_id = props.get(_compat.RUN_PROPERTY)
            if self.kind == "job":  # a SQL execution's description already is the job description, if one was set
                self.description = props.get("spark.job.description") or self.description


class ExecutionTracker:
    """Turns SQL-execution and job start/end records into execution events under the volume policy."""

    def __init__(self, app_id: str, min_execution_ms: int, summary_interval: float) -> None:
        self.app_id = app_id
        self.min_execution_ms = min_execution_ms
        self.summary_interval = summary_interval
        self.stream_runs: dict[str, str | None] = {}  # streaming query id -> MLflow run id
        self._sql: dict[int, _Execution] = {}
        self._jobs: dict[int, _Execution] = {}  # actions outside any SQL execution (RDD API)
        self._streaming: set[int] = set()
        self._summary: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def handle(self, record: Any) -> None:
        if isinstance(record, _compat.SqlStart):
            self._sql[record.execution_id] = _Execution("sql", record.execution_id, record.description, record.time_ms)
        elif isinstance(record, _compat.JobStart):
            self._job_start(record)
        elif isinstance(record, _compat.JobEnd):
            action = self._jobs.pop(record.job_id, None) if self._jobs else None  # no read when no action is open
            if action is not None:
                action.error = record.error
                self._finish(action, record.time_ms)
        elif isinstance(record, _compat.SqlEnd):
            execution = self._sql.pop(record.execution_id, None)
            if record.execution_id in self._streaming:
                self._streaming.discard(record.execution_id)
            elif execution is not None:
                execution.error = record.error or execution.error
                self._finish(execution, record.time_ms)

    def _job_start(self, record: _compat.JobStart) -> None:
        props = record.props
        sql_id = props.get("spark.sql.execution.id")
        parent = self._sql.get(int(sql_id)) if sql_id is not None else None
        if parent is not None and parent.jobs:  # a later job of an execution already placed: count it, no more
            parent.jobs += 1
            parent.stages += record.stages
            return
        query_id = props.get("sql.streaming.queryId")
        if query_id:
            if query_id not in self.stream_runs:
                self.stream_runs[query_id] = props.get(_compat.RUN_PROPERTY)
            if sql_id is not None:
                self._streaming.add(int(sql_id))
                self._sql.pop(int(sql_id), None)
            return
        if parent is None:
            parent = self._jobs[record.job_id] = _Execution("job", None, "", record.time_ms)
        parent.add_job(record.stages, props)

    def _finish(self, ex: _Execution, end_ms: int) -> None:
        duration = max(0, end_ms - ex.start)
        if ex.error is None and duration < self.min_execution_ms:
            self._count(ex, duration)
            return
        error = ex.error[:MAX_ERROR] if ex.error else None
        data = {
            "app_id": self.app_id,
            "execution_id": ex.execution_id,
            "kind": ex.kind,
            "description": ex.description[:512] or None,
            "job_group": ex.group,
            "duration_ms": duration,
            "jobs": ex.jobs,
            "stages": ex.stages,
            "error": error,
            "error_class": error_class(error),
            "mlflow_run_id": ex.run_id,
        }
        _api.emit("spark.execution.failed" if error else "spark.execution.succeeded", data)

    def _count(self, ex: _Execution, duration: int) -> None:
        with self._lock:
            s = self._summary
            if s is None:
                s = self._summary = {"executions": 0, "duration_ms": 0, "max_duration_ms": 0, "jobs": 0, "runs": set()}
                self._timer = threading.Timer(self.summary_interval, self.flush_summary)
                self._timer.daemon = True
                self._timer.start()
            s["executions"] += 1
            s["duration_ms"] += duration
            s["max_duration_ms"] = max(s["max_duration_ms"], duration)
            s["jobs"] += ex.jobs
            if ex.run_id and len(s["runs"]) < 20:
                s["runs"].add(ex.run_id)

    def flush_summary(self) -> None:
        """Publish the pending summary of short executions, if any (the timer calls this; so does detach)."""
        with self._lock:
            s, self._summary = self._summary, None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if s:
            runs = sorted(s.pop("runs"))
            _api.emit(
                "spark.execution.summary",
                {**s, "app_id": self.app_id, "window_s": self.summary_interval, "mlflow_run_ids": runs},
            )


class _JavaIdentity:
    """``equals``/``hashCode``/``toString``: the JVM calls them on every py4j proxy (removal needs them)."""

    def equals(self, other: Any) -> bool:
        return other is self

    def hashCode(self) -> int:
        return id(self) & 0x7FFFFFFF

    def toString(self) -> str:
        return f"databricks_nats.{type(self).__name__}"


class JobListener(_JavaIdentity):
    """The Python side of the JVM ``SparkListenerInterface``: enqueue what matters, return at once."""

    MAX_QUEUE = 10_000

    def __init__(self, tracker: ExecutionTracker) -> None:
        self.tracker = tracker
        self.dropped = 0
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(self.MAX_QUEUE)
        self._worker = threading.Thread(target=self._run, name="databricks-nats-spark", daemon=True)
        self._worker.start()

    # --- called by the JVM on the listener bus thread: no I/O, no py4j calls -------------------------
    def _put(self, kind: str, jevent: Any) -> None:
        try:
            self._queue.put_nowait((kind, jevent))
        except queue.Full:
            self.dropped += 1

    def taps(self) -> dict[str, Any]:
        """The listener methods we need, each as a py4j ``Consumer`` (the JVM filters out every other event)."""
        return {name: _Tap(getattr(self, name)) for name in ("onJobStart", "onJobEnd", "onOtherEvent")}

    def onJobStart(self, jevent: Any) -> None:
        self._put("job_start", jevent)

    def onJobEnd(self, jevent: Any) -> None:
        self._put("job_end", jevent)

    def onOtherEvent(self, jevent: Any) -> None:
        self._put("other", jevent)

    def __getattr__(self, name: str) -> Any:
        """Every other interface method (tasks, stages, executors, blocks…) is a no-op."""
        if name.startswith("on"):
            return _ignore
        raise AttributeError(name)

    class Java:
        implements = ["org.apache.spark.scheduler.SparkListenerInterface"]

    # --- worker thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                record = _compat.read_event(*item)
                if record is not None:
                    self.tracker.handle(record)
            except Exception as e:  # noqa: BLE001 - a listener never breaks the driver
                log.debug("databricks-nats: could not read a Spark listener event: %s", e)
            finally:
                self._queue.task_done()

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is handled (for detach and tests)."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def stop(self) -> None:
        self._queue.put(None)


def _ignore(*_args: Any) -> None:
    return None


class _Tap(_JavaIdentity):
    """A ``java.util.function.Consumer`` the JVM calls with one listener method's events."""

    def __init__(self, handle: Any) -> None:
        self.accept = handle

    class Java:
        implements = ["java.util.function.Consumer"]
