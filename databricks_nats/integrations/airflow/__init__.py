"""Airflow 3 integration (extra ``[airflow]``): react to the events in DAGs.

* ``NatsEventTrigger`` — a ``BaseEventTrigger`` on a durable JetStream consumer, for
  ``Asset(..., watchers=[AssetWatcher(name=..., trigger=NatsEventTrigger(...))])``.
* ``NatsEventSensor`` — a deferrable sensor; the CloudEvent is its ``return_value`` XCom.
* ``MessageQueueTrigger(scheme="nats", ...)`` resolves to ``NatsEventTrigger`` through the provider
  registered by the ``apache_airflow_provider`` entry point (``provider.get_provider_info``).
* ``cloudevents(triggering_asset_events)`` — every CloudEvent of a (possibly merged) asset-triggered run.
* Publishing back: ``NatsListenerPlugin`` (loaded through the ``airflow.plugins`` entry point;
  ``airflow.dag_run.*`` / ``airflow.task.*`` events, switched on by
  ``DATABRICKS_NATS_AIRFLOW_LISTENER`` or ``[databricks_nats] listener``), ``NatsPublishOperator`` and
  ``NatsHook`` with the ``nats`` connection type; events emitted in a run a NATS event started carry its
  causation (``run_causation``).

The names are imported on first use, so Airflow's provider discovery (which imports ``provider``) does
not import the trigger and sensor modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from databricks_nats._lazy import lazy_exports

__all__ = [
    "NatsEventSensor",
    "NatsEventTrigger",
    "NatsHook",
    "NatsListenerPlugin",
    "NatsMessageQueueProvider",
    "NatsPublishOperator",
    "cloudevents",
    "get_provider_info",
    "is_cloudevent",
    "run_causation",
]

_WHERE = {
    "NatsEventSensor": ".sensors",
    "NatsEventTrigger": ".triggers",
    "NatsMessageQueueProvider": ".queues",
    "NatsHook": ".hooks",
    "NatsListenerPlugin": ".plugin",
    "NatsPublishOperator": ".operators",
    "run_causation": ".lineage",
    "cloudevents": ".events",
    "is_cloudevent": ".events",
    "get_provider_info": ".provider",
}

if TYPE_CHECKING:
    from databricks_nats.integrations.airflow.events import cloudevents, is_cloudevent
    from databricks_nats.integrations.airflow.hooks import NatsHook
    from databricks_nats.integrations.airflow.lineage import run_causation
    from databricks_nats.integrations.airflow.operators import NatsPublishOperator
    from databricks_nats.integrations.airflow.plugin import NatsListenerPlugin
    from databricks_nats.integrations.airflow.provider import get_provider_info
    from databricks_nats.integrations.airflow.queues import NatsMessageQueueProvider
    from databricks_nats.integrations.airflow.sensors import NatsEventSensor
    from databricks_nats.integrations.airflow.triggers import NatsEventTrigger


__getattr__, __dir__ = lazy_exports(globals(), _WHERE)
