"""``databricks_nats.airflow``: the Airflow 3 integration (extra ``[airflow]``); see ``docs/airflow.md``.

``from databricks_nats.airflow import NatsEventTrigger, NatsEventSensor, cloudevents`` (NATS → Airflow) and
``NatsPublishOperator``, ``NatsHook``, ``NatsListenerPlugin`` (Airflow → NATS).
"""

from __future__ import annotations

from databricks_nats.integrations.airflow.events import cloudevents, is_cloudevent
from databricks_nats.integrations.airflow.hooks import NatsHook
from databricks_nats.integrations.airflow.lineage import run_causation
from databricks_nats.integrations.airflow.operators import NatsPublishOperator
from databricks_nats.integrations.airflow.plugin import NatsListenerPlugin
from databricks_nats.integrations.airflow.provider import get_provider_info
from databricks_nats.integrations.airflow.sensors import NatsEventSensor
from databricks_nats.integrations.airflow.triggers import NatsEventTrigger

__all__ = [
    "NatsEventSensor",
    "NatsEventTrigger",
    "NatsHook",
    "NatsListenerPlugin",
    "NatsPublishOperator",
    "cloudevents",
    "get_provider_info",
    "is_cloudevent",
    "run_causation",
]
