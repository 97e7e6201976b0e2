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

Execution events are handed to the publisher in batches, one publisher wake per batch (an isolated
publish costs about 1 ms of process CPU, which on a busy driver comes out of the JVM's cores): the
worker keeps finished executions up to ``LINGER`` seconds after the first one, or until ``BATCH_MAX``
are pending. ``drain()`` (``settle``), ``flush_summary`` (detach, the summary timer) and interpreter exit
(before the publisher's own exit flush) hand over whatever is pending. Order is kept: one lock covers
the batch, the summary and the hand-over.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import weakref
from typing import Any

from databricks_nats import _api
from databricks_nats._exit import at_exit
from databricks_nats.integrations.spark import _compat

__all__ = ["BATCH_MAX", "LINGER", "ExecutionTracker", "JobListener"]

log = logging.getLogger("databricks_nats.spark")
MAX_ERROR = 1000
LINGER = 1.0  # seconds a finished execution's event may wait for others before the batch is published
BATCH_MAX = 200  # pending execution events that are published at once, linger or not
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

    def __init__(
        self, app_id: str, min_execution_ms: int, summary_interval: float, linger: float | None = None
    ) -> None:
        self.app_id = app_id
        self.min_execution_ms = min_execution_ms
        self.summary_interval = summary_interval
        self.linger = LINGER if linger is None else linger
        self.stream_runs: dict[str, str | None] = {}  # streaming query id -> MLflow run id
        self._sql: dict[int, _Execution] = {}
        self._jobs: dict[int, _Execution] = {}  # actions outside any SQL execution (RDD API)
        self._streaming: set[int] = set()
        self._summary: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._batch: list[tuple[str, dict[str, Any], int]] = []  # execution events not yet handed to the publisher
        self._due = 0.0  # monotonic time at which the batch is published
        _live.add(self)

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
        self._add("spark.execution.failed" if error else "spark.execution.succeeded", data)

    # --- the batch ------------------------------------------------------------------------------------
    def _add(self, event_type: str, data: dict[str, Any]) -> None:
        with self._lock:
            if not self._batch:
                self._due = time.monotonic() + self.linger
            self._batch.append((event_type, data, time.time_ns()))  # its time: now, not the hand-over
            if len(self._batch) >= BATCH_MAX:
                self._publish()

    def pending(self) -> int:
        """Execution events waiting in the batch."""
        return len(self._batch)

    def due_in(self) -> float | None:
        """Seconds until the pending batch is to be published (<= 0: now), or None when nothing is pending."""
        return self._due - time.monotonic() if self._batch else None

    def publish(self) -> None:
        """Hand the pending execution events to the publisher now, in one batch."""
        with self._lock:
            self._publish()

    def _publish(self) -> None:  # the lock is held: batches and summaries reach the publisher in order
        items, self._batch = self._batch, []
        if items:
            _api.emit_many(items)  # one hand-over: one publisher wake

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
        """Publish the pending batch, then the summary of short executions, if any (the timer calls this;
        so does detach)."""
        with self._lock:
            s, self._summary = self._summary, None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if s:
                runs = sorted(s.pop("runs"))
                data = {**s, "app_id": self.app_id, "window_s": self.summary_interval, "mlflow_run_ids": runs}
                self._batch.append(("spark.execution.summary", data, time.time_ns()))
            self._publish()


_live: weakref.WeakSet[ExecutionTracker] = weakref.WeakSet()


def _publish_all() -> None:
    """At interpreter exit: every pending batch reaches the publisher before its exit flush (registered after
    the client module's, so ``_exit`` runs it first)."""
    for tracker in list(_live):
        try:
            tracker.flush_summary()
        except Exception as e:  # noqa: BLE001 - exit must not fail
            log.debug("databricks-nats: publishing pending Spark executions at exit: %s", e)


at_exit(_publish_all)


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

    def line_tap(self) -> _Tap:
        """A ``Consumer`` of the JVM-side filter's lines (one per event we need, its fields included; an
        execution's lines arrive together)."""
        return _Tap(self.onLine)

    def onLine(self, line: str) -> None:
        self._put("line", line)

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
        tracker = self.tracker
        while True:
            due = tracker.due_in()
            if due is not None and due <= 0:
                self._publish()
                continue
            try:
                item = self._queue.get(timeout=due)  # None: no batch pending, sleep until an event comes
            except queue.Empty:  # the batch's linger is over
                continue
            if item is None:
                self._publish()
                self._queue.task_done()
                return
            try:
                kind, payload = item
                for record in _compat.read_lines(payload) if kind == "line" else [_compat.read_event(kind, payload)]:
                    if record is not None:
                        tracker.handle(record)
            except Exception as e:  # noqa: BLE001 - a listener never breaks the driver
                log.debug("databricks-nats: could not read a Spark listener event: %s", e)
            finally:
                self._queue.task_done()

    def _publish(self) -> None:
        try:
            self.tracker.publish()
        except Exception as e:  # noqa: BLE001 - a listener never breaks the driver
            log.debug("databricks-nats: could not publish Spark executions: %s", e)

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is handled, then publish the pending batch (for detach and tests)."""
        deadline = time.monotonic() + timeout
        done = True
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    done = False
                    break
                self._queue.all_tasks_done.wait(left)
        self._publish()
        return done

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
