"""``NatsListenerPlugin``: the Airflow plugin that carries the listener (``listener``) into every component.

Registered by the package's ``airflow.plugins`` entry point (``pyproject.toml``), which Airflow loads in every
component whether providers are discovered lazily (Airflow's default) or not: installing the package is enough,
nothing goes in the plugins folder. It is deliberately not also a provider plugin (``get_provider_info``): with
``[core] lazy_discover_providers = False`` Airflow would load it twice and report the second as an import
error. Loading the plugin publishes nothing: the listener is off unless switched on
(``DATABRICKS_NATS_AIRFLOW_LISTENER=true`` or ``[databricks_nats] listener = True``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from databricks_nats.integrations.airflow import listener

__all__ = ["NatsListenerPlugin"]


class NatsListenerPlugin(AirflowPlugin):
    name = "databricks_nats"
    listeners = [listener]
