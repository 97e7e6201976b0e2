"""Provider information for Airflow's ``ProvidersManager`` (the ``apache_airflow_provider`` entry point).

Loaded while Airflow discovers providers: imports nothing from Airflow.
"""

from __future__ import annotations

from typing import Any

from databricks_nats._version import __version__

__all__ = ["get_provider_info"]

_PACKAGE = "databricks_nats.integrations.airflow"


def _option(description: str, kind: str, default: str, example: str) -> dict[str, Any]:
    return {"description": description, "version_added": "0.1.0", "type": kind, "example": example, "default": default}


def get_provider_info() -> dict[str, Any]:
    """What Airflow needs: the distribution, the ``nats`` message queue and connection type, the config section.

    Not the listener plugin: it has the ``airflow.plugins`` entry point, which Airflow loads in every component
    whatever ``[core] lazy_discover_providers`` says. Declared here too, it would be loaded a second time when
    providers are discovered eagerly, and Airflow would list "Plugin 'databricks_nats' already registered" as a
    plugin import error.
    """
    return {
        "package-name": "databricks-nats",
        "name": "Databricks NATS",
        "description": "React to Databricks / MLflow / Spark pointer events (CloudEvents) on NATS JetStream: "
        "an event trigger on a durable consumer for asset watchers, a deferrable sensor and the nats "
        "message queue of MessageQueueTrigger; publish back: a listener for DAG-run and task events, "
        "a publish operator and hook with the nats connection type.",
        "versions": [__version__],
        "queues": [f"{_PACKAGE}.queues.NatsMessageQueueProvider"],
        "triggers": [{"integration-name": "NATS", "python-modules": [f"{_PACKAGE}.triggers"]}],
        "sensors": [{"integration-name": "NATS", "python-modules": [f"{_PACKAGE}.sensors"]}],
        "operators": [{"integration-name": "NATS", "python-modules": [f"{_PACKAGE}.operators"]}],
        "hooks": [{"integration-name": "NATS", "python-modules": [f"{_PACKAGE}.hooks"]}],
        "connection-types": [
            {
                "connection-type": "nats",
                "hook-class-name": f"{_PACKAGE}.hooks.NatsHook",
                "hook-name": "NATS (databricks-nats)",
            }
        ],
        "config": {
            "databricks_nats": {
                "description": "Publishing Airflow's DAG-run and task events to NATS (databricks-nats).",
                "options": {
                    "listener": _option(
                        "Publish airflow.dag_run.* and airflow.task.* events (the environment variable "
                        "DATABRICKS_NATS_AIRFLOW_LISTENER wins when set).",
                        "boolean",
                        "False",
                        "True",
                    ),
                    "flush_timeout": _option(
                        "Seconds a task process waits at its end for its events to be acknowledged "
                        "(the rest stays in the spool).",
                        "float",
                        "2.0",
                        "5.0",
                    ),
                },
            }
        },
    }
