"""``NatsHook``: publish from a task ("results publish back"), with the NATS settings of an Airflow connection.

The connection type ``nats`` (registered by the provider) maps onto the library's settings:

* host — the servers: ``nats-1:4222,nats-2:4222`` or full URLs (``tls://nats:4222``); port — the port of a
  single host given without one;
* login + password — ``user`` / ``password``; a password without a login — ``token``;
* extra (JSON) — any other setting by its name: ``workspace``, ``env``, ``creds`` (a .creds file path),
  ``nkey_seed``, ``tls_ca``, ``subject_prefix``, ``stream``, ``oidc_token``, … An unknown name is refused
  (the message names it, never its value).

So credentials come from wherever Airflow keeps connections (metadata database, ``AIRFLOW_CONN_NATS_DEFAULT``,
a secrets backend). What the connection leaves unset comes from the worker's ``DATABRICKS_NATS_*``
environment / settings file. The hook's ``Client`` is its own (not the process default); ``emit`` is the
library's non-blocking, fail-open ``Client.emit``; ``flush``/``close`` wait for the acknowledgements, so call
``close()`` (or use ``with NatsHook() as hook:``) before the task ends.

Causation: an event emitted in a DAG run started by a NATS event is caused by that event (the one being
handled, ``caused_by``, or else the run's triggering asset event: ``lineage.context_causation``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseHook

from databricks_nats.errors import ConfigurationError
from databricks_nats.model.causation import Causation, current
from databricks_nats.settings import describe

__all__ = ["NatsHook", "connection_settings"]

_SETTINGS = frozenset(name for name, _env, _secret, _doc in describe())
_FIELDS = frozenset({"url", "user", "password", "token"})


def _servers(host: str, port: int | None) -> str:
    out = []
    for part in (p.strip() for p in host.split(",")):
        if not part:
            continue
        if "://" not in part:
            part = f"nats://{part}"
        if port and part.count(":") == 1:  # scheme only: no port given with this host
            part = f"{part}:{port}"
        out.append(part)
    return ",".join(out)


def connection_settings(conn: Any) -> dict[str, Any]:
    """The settings (keyword form) an Airflow ``Connection`` of type ``nats`` stands for."""
    extra = dict(getattr(conn, "extra_dejson", None) or {})
    unknown = sorted(set(extra) - _SETTINGS)
    if unknown:
        raise ConfigurationError(
            unknown[0], f"not a databricks-nats setting in the extra of connection {conn.conn_id!r}"
        )
    settings: dict[str, Any] = dict(extra)
    if conn.host:
        settings["url"] = _servers(str(conn.host), conn.port)
    if conn.login:
        settings["user"] = conn.login
        if conn.password:
            settings["password"] = conn.password
    elif conn.password:
        settings["token"] = conn.password
    return settings


class NatsHook(BaseHook):
    """Publish events with the settings of the Airflow connection ``nats_conn_id`` (type ``nats``)."""

    conn_name_attr = "nats_conn_id"
    default_conn_name = "nats_default"
    conn_type = "nats"
    hook_name = "NATS (databricks-nats)"

    def __init__(self, nats_conn_id: str = default_conn_name, **settings: Any) -> None:
        super().__init__()
        self.nats_conn_id = nats_conn_id
        self.overrides = dict(settings)
        self._client: Any = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema"],
            "relabeling": {"host": "Servers", "login": "User", "password": "Password (or token, without a user)"},
            "placeholders": {
                "host": "nats-1.internal:4222,nats-2.internal:4222",
                "extra": '{"workspace": "1234567890", "env": "prod", "creds": "/etc/nats/airflow.creds"}',
            },
        }

    def settings(self) -> dict[str, Any]:
        """The connection's settings, then the hook's keyword settings over them."""
        return {**connection_settings(self.get_connection(self.nats_conn_id)), **self.overrides}

    def get_conn(self) -> Any:
        """The hook's ``databricks_nats.Client`` (made on first use)."""
        if self._client is None:
            from databricks_nats.client import Client

            self._client = Client(**self.settings())
        return self._client

    def causation(self) -> Causation | None:
        """What events emitted now are caused by: the event being handled, else the run's triggering event."""
        here = current()
        if here is not None:
            return here
        try:
            from airflow.sdk import get_current_context

            from databricks_nats.integrations.airflow.lineage import context_causation

            return context_causation(get_current_context())
        except Exception:  # noqa: BLE001 - outside a task: no causation
            return None

    def emit(
        self,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        keys: Any = None,
        dataref: str | None = None,
        causation: Causation | None = None,
    ) -> Any:
        """``Client.emit`` (non-blocking, fail-open): the ``Event``, or None when it could not be made."""
        return self.get_conn().emit(
            event_type, data, keys=keys, dataref=dataref, causation=causation or self.causation()
        )

    def flush(self, timeout: float = 10.0) -> Any:
        """Wait until every event emitted so far is acknowledged (``FlushResult``)."""
        return self.get_conn().flush(timeout)

    def close(self, timeout: float = 10.0) -> Any:
        """Flush for at most ``timeout`` seconds and stop the publisher."""
        client, self._client = self._client, None
        return client.close(timeout) if client is not None else None

    def __enter__(self) -> NatsHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
