"""Which event families are live in this process, and why not: shown by ``stats()`` and ``doctor``.

Integrations report here when they attach (the Spark job listener on a Spark Connect session reports
``spark.jobs`` as unavailable, say); nothing here imports anything beyond the standard library.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import Any

__all__ = ["compute_families", "connect_only", "families", "report_family"]

_lock = threading.Lock()
_families: dict[str, dict[str, Any]] = {}


def report_family(name: str, live: bool, detail: str = "") -> None:
    """Record whether the event family ``name`` (``mlflow``, ``spark.jobs``, ``spark.streams``…) is live, and why."""
    with _lock:
        _families[name] = {"live": live, "detail": detail}


def families() -> dict[str, dict[str, Any]]:
    """``{family: {"live": bool, "detail": str}}`` for every family an integration reported."""
    with _lock:
        return {name: dict(state) for name, state in sorted(_families.items())}


def connect_only() -> bool:
    """Whether this compute runs Spark through Spark Connect only (serverless, standard access, ``SPARK_REMOTE``)."""
    env = os.environ
    return bool(
        env.get("SPARK_CONNECT_MODE_ENABLED") == "1"
        or env.get("SPARK_REMOTE")
        or env.get("DATABRICKS_RUNTIME_VERSION", "").startswith("client.")  # serverless environments
    )


def compute_families() -> dict[str, dict[str, Any]]:
    """What this compute can publish (doctor): the families reported in this process, else what the compute allows."""
    have = importlib.util.find_spec
    spark = have("pyspark") is not None
    expected = {
        "mlflow": {
            "live": have("mlflow") is not None,
            "detail": "the MLflow hook (zero-code when configured, or databricks_nats.autolog())",
        },
        "spark.streams": {"live": spark, "detail": "StreamingQueryListener from attach(): classic and Spark Connect"},
        "spark.jobs": {
            "live": spark and not connect_only(),
            "detail": "JVM SparkListener from attach(): classic compute only"
            + ("; this compute is Spark Connect only" if connect_only() else ""),
        },
    }
    return {**expected, **families()}
