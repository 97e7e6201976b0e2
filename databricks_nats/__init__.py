"""databricks-nats: Databricks ML announces itself on NATS as lean CloudEvents pointer events.

import databricks_nats as dn
dn.configure(url="nats://nats.internal:4222", env="prod")
dn.emit("myteam.features.refreshed", {"table": "main.features.users"}, keys=["users"])
dn.flush(timeout=5)
"""

from databricks_nats._api import configure, emit, ensure_stream, flush, get_settings, publish, shutdown, stats
from databricks_nats._version import __version__
from databricks_nats.errors import (
    ConfigurationError,
    DatabricksNatsError,
    FlushTimeout,
    PublishError,
    StreamError,
    StreamMismatch,
    SubjectError,
)
from databricks_nats.model.events import Event
from databricks_nats.settings import Secret, Settings
from databricks_nats.transport.publisher import FlushResult


def autolog(*, disable: bool = False, **mlflow_autolog_kwargs: object) -> None:
    """Install the MLflow hook and call ``mlflow.autolog(**kwargs)``; ``disable=True`` removes it."""
    from databricks_nats.integrations.mlflow import autolog as _mlflow_autolog

    _mlflow_autolog(disable=disable, **mlflow_autolog_kwargs)


__all__ = [
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
    "__version__",
    "autolog",
    "configure",
    "emit",
    "ensure_stream",
    "flush",
    "get_settings",
    "publish",
    "shutdown",
    "stats",
]
