"""databricks-nats: Databricks ML announces itself on NATS as lean CloudEvents pointer events.

import databricks_nats as dn
dn.configure(url="nats://nats.internal:4222", env="prod")
dn.emit("myteam.features.refreshed", {"table": "main.features.users"}, keys=["users"])
dn.flush(timeout=5)

Several publishers (two workspaces, a test and the app) are ``dn.Client`` objects; the functions above use
the default client (``dn.current_client()``).

The public names are imported on first use (PEP 562): MLflow loads our run context provider while
``import mlflow`` runs, and that must not pay for the publisher, the event model or asyncio.
"""

from __future__ import annotations

import typing

from databricks_nats import _sections
from databricks_nats._lazy import lazy_exports as _lazy_exports
from databricks_nats._version import __version__
from databricks_nats.errors import (
    ConfigurationError,
    DatabricksNatsError,
    FlushTimeout,
    PublishError,
    StreamError,
    StreamMismatch,
    SubjectError,
    WaitTimeout,
)

# The integrations' settings sections (MLflow's, Spark's), imported when settings are first built.
_sections.declare("databricks_nats.integrations.sections")

if typing.TYPE_CHECKING:
    from typing import Any

    from databricks_nats._api import (
        configure,
        emit,
        emit_many,
        ensure_stream,
        flush,
        get_settings,
        publish,
        shutdown,
        stats,
    )
    from databricks_nats.client import Client, current_client
    from databricks_nats.consumer import subscribe, wait_for
    from databricks_nats.model.causation import Causation, caused_by
    from databricks_nats.model.events import Event
    from databricks_nats.ports import FlushResult
    from databricks_nats.settings import Secret, Settings

__getattr__, __dir__ = _lazy_exports(
    globals(),
    {
        "Client": "databricks_nats.client",
        "current_client": "databricks_nats.client",
        "configure": "databricks_nats._api",
        "emit": "databricks_nats._api",
        "emit_many": "databricks_nats._api",
        "ensure_stream": "databricks_nats._api",
        "flush": "databricks_nats._api",
        "get_settings": "databricks_nats._api",
        "publish": "databricks_nats._api",
        "shutdown": "databricks_nats._api",
        "stats": "databricks_nats._api",
        "subscribe": "databricks_nats.consumer",
        "wait_for": "databricks_nats.consumer",
        "Event": "databricks_nats.model.events",
        "Causation": "databricks_nats.model.causation",
        "caused_by": "databricks_nats.model.causation",
        "Secret": "databricks_nats.settings",
        "Settings": "databricks_nats.settings",
        "FlushResult": "databricks_nats.ports",
    },
)


def autolog(*, disable: bool = False, spark: Any = None, **mlflow_autolog_kwargs: Any) -> None:
    """Install the MLflow hook and call ``mlflow.autolog(**kwargs)``; ``disable=True`` removes it.

    With ``spark`` (a SparkSession), the Spark listeners are attached to it as well (detached on disable).
    """
    from databricks_nats.integrations.mlflow import autolog as _mlflow_autolog

    _mlflow_autolog(disable=disable, spark=spark, **mlflow_autolog_kwargs)


__all__ = [
    "Causation",
    "Client",
    "ConfigurationError",
    "DatabricksNatsError",
    "Event",
    "FlushResult",
    "FlushTimeout",
    "PublishError",
    "Secret",
    "Settings",
    "StreamError",
    "StreamMismatch",
    "SubjectError",
    "WaitTimeout",
    "__version__",
    "autolog",
    "caused_by",
    "configure",
    "current_client",
    "emit",
    "emit_many",
    "ensure_stream",
    "flush",
    "get_settings",
    "publish",
    "shutdown",
    "stats",
    "subscribe",
    "wait_for",
]
