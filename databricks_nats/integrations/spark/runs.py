"""Which MLflow run is active, told to Spark so its listeners can name it (the MLflow hook calls this).

* Classic sessions: a local property of the driver thread (``databricks_nats.mlflow_run_id``), which
  every job of the thread carries; the job listener maps a streaming query to it at its first batch.
* Spark Connect sessions: a session tag ``databricks_nats.mlflow_run_id=<run id>`` on the calling
  thread, sent with every request; the server hands it back in ``QueryStartedEvent.jobTags`` (Spark
  >= 4.1). A PySpark 3.5 client also sets the session conf ``databricks_nats.mlflow_run_id``, which the
  listener reads through its own session where the server runs it.
* Either way the run is also remembered for the calling thread (``current_run_id``): a listener running
  in this process hears ``onQueryStarted`` on the thread that started the query (PySpark 4 Connect).

Never raises: correlation is best effort.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from databricks_nats.integrations.spark import _compat

__all__ = ["current_run_id", "set_active_run", "unwatch", "watch"]

log = logging.getLogger("databricks_nats.spark")
_local = threading.local()
_lock = threading.Lock()
_attached: dict[int, Any] = {}  # id -> every session with listeners attached (a Connect one may not be active)


def current_run_id() -> str | None:
    """The run ``set_active_run`` last named on this thread."""
    value: str | None = getattr(_local, "run_id", None)
    return value


def _sessions() -> list[Any]:
    """The active session and every attached one (a Connect session may not be the active one)."""
    found: list[Any] = []
    try:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            found.append(active)
    except Exception as e:  # noqa: BLE001 - a stopped or half-built session
        log.debug("databricks-nats: no active Spark session for the run id: %s", e)
    with _lock:
        attached = list(_attached.values())
    for session in attached:
        if all(session is not s for s in found):
            found.append(session)
    return found


def watch(spark: Any) -> None:
    """Tell this session about the active run too, even when it is not the active one (``attach`` calls this)."""
    with _lock:
        _attached[id(spark)] = spark


def unwatch(spark: Any) -> None:
    """Stop telling this session (``detach`` calls this)."""
    with _lock:
        _attached.pop(id(spark), None)


def set_active_run(run_id: str | None) -> None:
    """Tell every Spark session of this process that ``run_id`` (None: no run) is active on this thread."""
    _local.run_id = run_id or None
    for spark in _sessions():
        try:
            if _compat.has_jvm(spark):
                spark.sparkContext.setLocalProperty(_compat.RUN_PROPERTY, run_id)
                continue
            _compat.set_run_tag(spark, run_id)
            if _compat.listener_runs_on_server():
                _compat.set_run_conf(spark, run_id)
        except Exception as e:  # noqa: BLE001 - a stopped session, a server refusing the conf: no correlation
            log.debug("databricks-nats: could not name the MLflow run on a Spark session: %s", e)
