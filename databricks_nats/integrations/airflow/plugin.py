"""``NatsListenerPlugin``: the Airflow plugin that carries the listener (``listener``) into every component.

Registered by the provider (``get_provider_info()["plugins"]``). Airflow loads provider plugins only when
providers are discovered eagerly (``[core] lazy_discover_providers = False``); otherwise add one line to a file
in the plugins folder: ``from databricks_nats.airflow import NatsListenerPlugin``. Loading the plugin publishes
nothing: the listener is off unless switched on (``DATABRICKS_NATS_AIRFLOW_LISTENER=true`` or
``[databricks_nats] listener = True``). Airflow loads a plugin of a given name once, whichever way it came.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from databricks_nats.integrations.airflow import listener

__all__ = ["NatsListenerPlugin"]


class NatsListenerPlugin(AirflowPlugin):
    name = "databricks_nats"
    listeners = [listener]
