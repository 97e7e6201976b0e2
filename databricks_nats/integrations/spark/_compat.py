"""The only module that touches PySpark's py4j internals: the JVM gateway, listener bus and event objects.

Facts this module relies on (PySpark 3.5 to 4.x, classic sessions only):

* the py4j callback server is not started by default (``ensure_callback_server_started``);
* each pass of a Python object to Java makes a new proxy, so the proxy is materialised once (through
  a ``java.util.ArrayList``) and that same proxy is added and removed;
* ``mlflow.autolog(disable=True)`` shuts the callback server down and py4j keeps the dead object, which
  ``ensure_callback_server_started`` takes for a live one: ``add_listener`` starts a fresh one then;
* the JVM calls every interface method, including ``equals``/``hashCode``/``toString``;
* ``LiveListenerBus.addToQueue`` is ``private[spark]`` in Scala but public in bytecode: a queue of our
  own means a slow Python listener can only ever delay or drop *our* events, never Spark's UI's.

Spark Connect sessions (Databricks serverless, standard access) have no JVM here: ``has_jvm`` is False.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "JobEnd",
    "JobStart",
    "Props",
    "SqlEnd",
    "SqlStart",
    "add_listener",
    "app_id",
    "drain_bus",
    "has_jvm",
    "local_run_id",
    "read_event",
    "remove_listener",
]

QUEUE = "databricksNats"
_SQL_START = "SparkListenerSQLExecutionStart"
_SQL_END = "SparkListenerSQLExecutionEnd"
RUN_PROPERTY = "databricks_nats.mlflow_run_id"


def has_jvm(spark: Any) -> bool:
    """True for a classic session (py4j gateway to a driver JVM), False for Spark Connect."""
    return getattr(spark, "_jsc", None) is not None and getattr(spark, "_sc", None) is not None


def app_id(spark: Any) -> str:
    try:
        return str(spark.sparkContext.applicationId) if has_jvm(spark) else str(spark.conf.get("spark.app.id"))
    except Exception:  # noqa: BLE001 - Connect may not expose it; the session id still names the app
        return str(getattr(spark, "session_id", "unknown"))


def add_listener(spark: Any, listener: Any) -> Any:
    """Register a py4j listener object on the driver's bus; return the proxy that ``remove_listener`` needs."""
    from pyspark.java_gateway import ensure_callback_server_started

    sc = spark.sparkContext
    gateway = sc._gateway
    server = gateway.__dict__.get("_callback_server")
    if server is not None and getattr(server, "is_shutdown", False):
        # Someone shut it down (MLflow's Spark autologging does, when disabled) and py4j keeps the dead
        # object, so PySpark would never start it again: forget it, so it is started afresh.
        gateway._callback_server = None
    ensure_callback_server_started(gateway)  # type: ignore[no-untyped-call]
    holder = gateway.jvm.java.util.ArrayList()
    holder.add(listener)
    proxy = holder.get(0)
    jsc = sc._jsc.sc()
    try:
        jsc.listenerBus().addToQueue(proxy, QUEUE)
    except Exception:  # noqa: BLE001 - a Spark without addToQueue: the shared queue works too
        jsc.addSparkListener(proxy)
    return proxy


def remove_listener(spark: Any, proxy: Any) -> None:
    spark.sparkContext._jsc.sc().removeSparkListener(proxy)


def drain_bus(spark: Any, timeout: float) -> bool:
    """Wait until Spark's listener bus has delivered every posted event (job and streaming listeners)."""
    if not has_jvm(spark):
        return True
    try:
        spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(int(timeout * 1000))
        return True
    except Exception:  # noqa: BLE001 - a TimeoutException from the JVM, or a stopped context
        return False


def local_run_id(spark: Any) -> str | None:
    """The MLflow run id the hook set as a local property on this thread (classic sessions only)."""
    if not has_jvm(spark):
        return None
    value = spark.sparkContext.getLocalProperty(RUN_PROPERTY)
    return str(value) if value else None


class SqlStart(NamedTuple):
    execution_id: int
    description: str
    time_ms: int


class SqlEnd(NamedTuple):
    execution_id: int
    time_ms: int
    error: str | None


class Props:
    """A job's local properties, read from the JVM one key at a time, only when asked (each read is a py4j call)."""

    def __init__(self, jprops: Any) -> None:
        self._jprops = jprops
        self._seen: dict[str, str | None] = {}

    def get(self, key: str) -> str | None:
        if key not in self._seen:
            value = self._jprops.getProperty(key) if self._jprops is not None else None
            self._seen[key] = None if value is None else str(value)
        return self._seen[key]


class JobStart(NamedTuple):
    job_id: int
    time_ms: int
    stages: int
    props: Props


class JobEnd(NamedTuple):
    job_id: int
    time_ms: int
    error: str | None


def read_event(kind: str, jevent: Any) -> SqlStart | SqlEnd | JobStart | JobEnd | None:
    """Copy what we publish out of a JVM listener event (py4j calls: never on the listener bus thread)."""
    if kind == "job_start":
        return JobStart(
            int(jevent.jobId()), int(jevent.time()), int(jevent.stageInfos().size()), Props(jevent.properties())
        )
    if kind == "job_end":
        result = str(jevent.jobResult().toString())
        error = None if result.startswith("JobSucceeded") else result.removeprefix("JobFailed(").removesuffix(")")
        return JobEnd(int(jevent.jobId()), int(jevent.time()), error)
    name = str(jevent.getClass().getSimpleName())
    if name == _SQL_START:
        return SqlStart(int(jevent.executionId()), str(jevent.description() or ""), int(jevent.time()))
    if name == _SQL_END:
        error = None
        try:
            opt = jevent.errorMessage()
            error = str(opt.get()) if opt.isDefined() else None
        except Exception:  # noqa: BLE001 - Spark < 3.4 has no errorMessage; the job's failure still counts
            error = None
        return SqlEnd(int(jevent.executionId()), int(jevent.time()), error)
    return None
