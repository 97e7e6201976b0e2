"""The only module that touches PySpark's py4j internals: the JVM gateway, listener bus and event objects.

Facts this module relies on (PySpark 3.5 to 4.x, classic sessions only):

* the py4j callback server is not started by default (``ensure_callback_server_started``);
* each pass of a Python object to Java makes a new proxy, so the proxy is materialised once (through
  a ``java.util.ArrayList``) and that same proxy is added and removed;
* every callback into Python (and the release of the event reference it brings) is a socket round trip
  costing 100-200 us of Python CPU, so the JVM filters for us: ``java.beans.EventHandler`` (JDK) proxies
  forward only ``onJobStart``, ``onJobEnd`` and ``onOtherEvent``, each to a ``Consumer`` of ours;
* so does every read of an event's field from Python (26 calls and ~16 releases per aggregation), so the
  proxies hand the events to a small Java class compiled at attach with Janino (which Spark SQL ships for
  its code generation): it drops what we never publish (AQE and metric updates, job ends inside SQL
  executions) and describes each event we need in one line of text, fields included; an execution's
  lines reach Python in one callback, at its end. Without Janino (or if compiling fails) the proxies
  call Python, which reads the fields itself;
* ``mlflow.autolog(disable=True)`` shuts the callback server down and py4j keeps the dead object, which
  ``ensure_callback_server_started`` takes for a live one: ``add_listener`` starts a fresh one then;
* that shutdown (MLflow's Spark autologging also does it in ``SparkSession.stop``) hangs in py4j 0.10.9.x
  once a callback has arrived: each connection's thread waits in ``readline`` holding its stream's lock,
  and ``close`` takes that lock before it shuts the socket. ``_unblock_close`` shuts the socket first;
* the JVM calls every interface method, including ``equals``/``hashCode``/``toString``;
* ``LiveListenerBus.addToQueue`` is ``private[spark]`` in Scala but public in bytecode: a queue of our
  own means a slow Python listener can only ever delay or drop *our* events, never Spark's UI's.

Spark Connect sessions (Databricks serverless, standard access) have no JVM here: ``has_jvm`` is False.
What this module relies on there:

* session tags (``SparkSession.addTag``/``removeTag``, PySpark >= 3.5 on Connect) are client-side and
  thread-local; the client sends them with every execute request and the server turns each into a job
  tag ``SparkConnect_SessionTag_User_<user>_Session_<session>_Tag_<tag>``; since Spark 4.1
  (SPARK-51981) a query's ``QueryStartedEvent.jobTags`` holds them (older events have no ``jobTags``);
* a PySpark 3.5 Connect client cloudpickles a streaming listener and the server runs it in a Python
  process of its own (``pyspark.sql.connect.streaming.worker.listener_worker``), which builds the events
  with ``Query*Event.fromJson`` and gives the listener a session on the same session id
  (``listener.spark``): the session's conf (``RUN_PROPERTY``) is what the client can tell it there;
* a PySpark 4 Connect client runs the listener in its own process: ``onQueryStarted`` on the thread that
  called ``start()``, the other callbacks on the listener bus thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
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
    "ensure_callback_server",
    "has_jvm",
    "local_run_id",
    "read_event",
    "read_lines",
    "remove_listener",
    "run_id_from_tags",
    "set_run_conf",
    "set_run_tag",
    "started_run_id",
]

log = logging.getLogger("databricks_nats.spark")
QUEUE = "databricksNats"
_SQL_START = "SparkListenerSQLExecutionStart"
_SQL_END = "SparkListenerSQLExecutionEnd"
RUN_PROPERTY = "databricks_nats.mlflow_run_id"
RUN_TAG = RUN_PROPERTY + "="  # the session tag ``databricks_nats.mlflow_run_id=<run id>`` (no comma: run ids are hex)


def has_jvm(spark: Any) -> bool:
    """True for a classic session (py4j gateway to a driver JVM), False for Spark Connect."""
    return getattr(spark, "_jsc", None) is not None and getattr(spark, "_sc", None) is not None


def app_id(spark: Any) -> str:
    try:
        return str(spark.sparkContext.applicationId) if has_jvm(spark) else str(spark.conf.get("spark.app.id"))
    except Exception:  # noqa: BLE001 - Connect may not expose it; the session id still names the app
        return str(getattr(spark, "session_id", "unknown"))


def ensure_callback_server(spark: Any) -> None:
    """Make sure py4j's callback server (through which the JVM calls Python listeners) runs; classic only."""
    if not has_jvm(spark):
        return
    from pyspark.java_gateway import ensure_callback_server_started

    gateway = spark.sparkContext._gateway
    server = gateway.__dict__.get("_callback_server")
    if server is not None and getattr(server, "is_shutdown", False):
        # Someone shut it down (MLflow's Spark autologging does, when disabled) and py4j keeps the dead
        # object, so PySpark would never start it again: forget it, so it is started afresh.
        gateway._callback_server = None
    ensure_callback_server_started(gateway)  # type: ignore[no-untyped-call]
    _unblock_close()


def add_listener(spark: Any, listener: Any) -> list[Any]:
    """Register a py4j listener on the driver's bus; return the JVM listeners ``remove_listener`` needs.

    ``listener`` implements ``SparkListenerInterface`` and offers ``taps()``: a py4j ``Consumer`` per listener
    method it wants. Each tap is registered behind a JDK ``java.beans.EventHandler`` proxy, which implements
    the interface in the JVM and calls Python only for its one method: every task, stage and block event
    stays in the JVM (each py4j callback costs 100-200 us of Python CPU). The proxies call the compiled
    filter when there is one (``_jvm_filter``: one line per event we publish, to ``listener.line_tap()``),
    else the taps. Without ``java.desktop`` (a trimmed JVM), the listener itself is registered and sees
    every event.
    """
    sc = spark.sparkContext
    gateway = sc._gateway
    ensure_callback_server(spark)
    try:
        taps = listener.taps()
        interface = gateway.jvm.org.apache.spark.scheduler.SparkListenerInterface._java_lang_class
        create = gateway.jvm.java.beans.EventHandler.create
        jfilter = _jvm_filter(gateway, listener.line_tap())
        targets = {
            m: (jfilter, _FILTER_METHODS[m]) if jfilter is not None else (tap, "accept") for m, tap in taps.items()
        }
        proxies = [create(interface, target, action, "", method) for method, (target, action) in targets.items()]
    except Exception:  # noqa: BLE001 - no java.beans here: one proxy that hears everything
        holder = gateway.jvm.java.util.ArrayList()
        holder.add(listener)
        proxies = [holder.get(0)]
    bus = sc._jsc.sc().listenerBus()
    for proxy in proxies:
        try:
            bus.addToQueue(proxy, QUEUE)
        except Exception:  # noqa: BLE001 - a Spark without addToQueue: the shared queue works too
            sc._jsc.sc().addSparkListener(proxy)
    return proxies


_FILTER_METHODS = {"onJobStart": "jobStart", "onJobEnd": "jobEnd", "onOtherEvent": "other"}
_FILTER_CLASS = "DatabricksNatsListenerFilter"
_PROP_KEYS = (
    "spark.sql.execution.id",
    "spark.jobGroup.id",
    RUN_PROPERTY,
    "spark.job.description",
    "sql.streaming.queryId",
)
_SEP = "\u0001"  # between a line's fields (removed from values); a value is "=" + text, or empty for null
_LINES = "\u0002"  # between the lines of one callback
_FILTER_FILE = "listener_filter.java"  # compiled with Janino: the filter's Java source, shipped beside this module


def _filter_source() -> str:
    """The filter's Java source, with the local property keys it forwards."""
    from importlib.resources import files

    text = files(__package__).joinpath(_FILTER_FILE).read_text(encoding="utf-8")
    return text.replace("@KEYS@", ", ".join(f'"{key}"' for key in _PROP_KEYS))


_filters: tuple[Any, Any] | None = None  # (gateway, the compiled class or None when it cannot be)


def _jvm_filter(gateway: Any, out: Any) -> Any:
    """A new filter (the class compiled once per gateway) sending its lines to ``out``; None without one."""
    global _filters
    try:
        if _filters is None or _filters[0] is not gateway:
            _filters = (gateway, None)  # one try per gateway: a failure is not retried at every attach
            jvm = gateway.jvm
            compiler = jvm.org.codehaus.janino.SimpleCompiler()
            compiler.setParentClassLoader(jvm.org.apache.spark.util.Utils.getContextOrSparkClassLoader())
            compiler.cook(_filter_source())
            _filters = (gateway, compiler.getClassLoader().loadClass(_FILTER_CLASS))
        cls = _filters[1]
        if cls is None:
            return None
        none = gateway.new_array(gateway.jvm.java.lang.Class, 0)
        instance = cls.getConstructor(none).newInstance(gateway.new_array(gateway.jvm.java.lang.Object, 0))
        instance.setOut(out)
        return instance
    except Exception as e:  # noqa: BLE001 - no Janino, or a Spark it cannot compile against: Python reads the events
        log.debug("databricks-nats: no JVM-side filter for the job listener (%s); Python reads the events", e)
        return None


def _unblock_close() -> None:
    """Make py4j's connection ``close`` shut the socket down first, waking the thread blocked reading it."""
    try:
        from py4j.clientserver import ClientServerConnection
    except ImportError:  # a py4j without clientserver: nothing to unblock
        return
    original = ClientServerConnection.close
    if getattr(original, "_databricks_nats", False):
        return

    @functools.wraps(original)
    def close(self: Any, reset: bool = False) -> Any:
        sock = getattr(self, "socket", None)
        if sock is not None and not reset:
            with contextlib.suppress(OSError):  # the reader sees EOF and lets go of the stream's lock
                sock.shutdown(socket.SHUT_RDWR)
        return original(self, reset)

    close._databricks_nats = True  # type: ignore[attr-defined]
    ClientServerConnection.close = close


def remove_listener(spark: Any, proxies: list[Any]) -> None:
    for proxy in proxies:
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


def pyspark_major() -> int:
    import pyspark

    try:
        return int(str(pyspark.__version__).split(".", 1)[0])
    except ValueError:  # a development build: assume the newest behaviour
        return 99


def listener_runs_on_server() -> bool:
    """A Connect client of PySpark < 4 ships its streaming listeners to the server (see the module docstring)."""
    return pyspark_major() < 4


_tags = threading.local()  # per thread: {id(session): the run tag this thread added to it}


def set_run_tag(spark: Any, run_id: str | None) -> None:
    """Tag this thread's operations on a Connect session with the MLflow run (replacing the previous run's tag)."""
    added: dict[int, str] = _tags.__dict__.setdefault("added", {})
    old = added.pop(id(spark), None)
    if old is not None:
        spark.removeTag(old)
    if run_id:
        tag = RUN_TAG + str(run_id)
        spark.addTag(tag)
        added[id(spark)] = tag


def set_run_conf(spark: Any, run_id: str | None) -> None:
    """Name the run in the session's conf, where a listener running on the server can read it (PySpark 3.5)."""
    if run_id:
        spark.conf.set(RUN_PROPERTY, str(run_id))
    else:
        spark.conf.unset(RUN_PROPERTY)


def run_id_from_tags(tags: Any) -> str | None:
    """The run id of our tag among a query's job tags (raw, or as the Connect server prefixes them)."""
    for tag in tags or ():
        text = str(tag)
        at = text.rfind(RUN_TAG)
        if at != -1 and (at == 0 or text[:at].endswith("_Tag_")):
            return text[at + len(RUN_TAG) :] or None
    return None


def started_run_id(event: Any, spark: Any = None) -> str | None:
    """The MLflow run a ``QueryStartedEvent`` names: our tag among its job tags (Spark >= 4.1); else, given
    the server-side session a shipped listener runs with, the session conf the client set (``set_run_conf``)."""
    found = run_id_from_tags(getattr(event, "jobTags", None))
    if found is not None or spark is None:
        return found
    value = spark.conf.get(RUN_PROPERTY, None)
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

    def __init__(self, jprops: Any, known: dict[str, str | None] | None = None) -> None:
        self._jprops = jprops
        self._seen: dict[str, str | None] = known or {}

    def get(self, key: str) -> str | None:
        if key not in self._seen:
            value = self._jprops.getProperty(key) if self._jprops is not None else None
            self._seen[key] = None if value is None else str(value)
        return self._seen[key]


class _JobEvent:
    """A job's start or end whose fields are read from the JVM only when asked (each read is a py4j call);
    ``known`` fields (from the JVM filter's line) are never read."""

    def __init__(self, jevent: Any, **known: Any) -> None:
        self._j = jevent
        self.__dict__.update(known)  # cached_property values: the reads below never happen for them

    @functools.cached_property
    def job_id(self) -> int:
        return int(self._j.jobId())

    @functools.cached_property
    def time_ms(self) -> int:
        return int(self._j.time())


class JobStart(_JobEvent):
    @functools.cached_property
    def stages(self) -> int:
        return int(self._j.stageInfos().size())

    @functools.cached_property
    def props(self) -> Props:
        return Props(self._j.properties())


class JobEnd(_JobEvent):
    """A job inside a SQL execution needs only its id: the execution's end says the rest."""

    @functools.cached_property
    def error(self) -> str | None:
        return _job_error(str(self._j.jobResult().toString()))


def _job_error(result: str) -> str | None:
    return None if result.startswith("JobSucceeded") else result.removeprefix("JobFailed(").removesuffix(")")


def _class_name(jevent: Any) -> str:
    """The event's simple class name in one py4j call (commons-lang3 ships with Spark), else in two.

    The static method is looked up once per gateway: each attribute access on a ``JavaClass`` is a round trip.
    """
    global _short_name
    client = jevent._gateway_client
    if _short_name is None or _short_name[0] is not client:
        from py4j.java_gateway import JavaClass

        _short_name = (client, JavaClass("org.apache.commons.lang3.ClassUtils", client).getShortClassName)
    try:
        return str(_short_name[1](jevent, ""))
    except Exception:  # noqa: BLE001 - no commons-lang3 on this classpath: ask the class itself
        return str(jevent.getClass().getSimpleName())


_short_name: tuple[Any, Any] | None = None  # (gateway client, ClassUtils.getShortClassName)


def _value(field: str) -> str | None:
    return field[1:] if field else None


def read_lines(text: str) -> list[SqlStart | SqlEnd | JobStart | JobEnd | None]:
    """The records the lines of one of the JVM filter's callbacks describe, in order (no py4j call)."""
    return [read_line(line) for line in text.split(_LINES)]


def read_line(line: str) -> SqlStart | SqlEnd | JobStart | JobEnd | None:
    """The record one line of the JVM filter describes."""
    kind, *f = line.split(_SEP)
    if kind == "J":
        props = Props(None, dict(zip(_PROP_KEYS, map(_value, f[3:]), strict=True)))
        return JobStart(None, job_id=int(f[0]), time_ms=int(f[1]), stages=int(f[2]), props=props)
    if kind == "E":
        return JobEnd(None, job_id=int(f[0]), time_ms=int(f[1]), error=_job_error(_value(f[2]) or ""))
    if kind == "S":
        return SqlStart(int(f[0]), _value(f[2]) or "", int(f[1]))
    if kind == "F":
        return SqlEnd(int(f[0]), int(f[1]), _value(f[2]))
    return None


def read_event(kind: str, jevent: Any) -> SqlStart | SqlEnd | JobStart | JobEnd | None:
    """Copy what we publish out of a JVM listener event (py4j calls: never on the listener bus thread)."""
    if kind == "job_start":
        return JobStart(jevent)
    if kind == "job_end":
        return JobEnd(jevent)
    name = _class_name(jevent)
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
