"""Provider information for Airflow's ``ProvidersManager`` (the ``apache_airflow_provider`` entry point).

Loaded while Airflow discovers providers: imports nothing from Airflow.
"""

from __future__ import annotations

from typing import Any

from databricks_nats._version import __version__

__all__ = ["get_provider_info"]

_PACKAGE = "databricks_nats.integrations.airflow"


def get_provider_info() -> dict[str, Any]:
    """What Airflow needs: the distribution name, and the ``nats`` message queue for ``MessageQueueTrigger``."""
    return {
        "package-name": "databricks-nats",
        "name": "Databricks NATS",
        "description": "React to Databricks / MLflow / Spark pointer events (CloudEvents) on NATS JetStream: "
        "an event trigger on a durable consumer for asset watchers, a deferrable sensor and the nats "
        "message queue of MessageQueueTrigger.",
        "versions": [__version__],
        "queues": [f"{_PACKAGE}.queues.NatsMessageQueueProvider"],
        "triggers": [{"integration-name": "NATS", "python-modules": [f"{_PACKAGE}.triggers"]}],
        "sensors": [{"integration-name": "NATS", "python-modules": [f"{_PACKAGE}.sensors"]}],
    }
