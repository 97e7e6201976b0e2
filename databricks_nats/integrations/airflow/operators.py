"""``NatsPublishOperator``: publish one event from a DAG and wait until the stream acknowledged it.

The settings (servers, credentials, namespace) come from the Airflow connection ``nats_conn_id`` (type
``nats``, see ``hooks``); ``event_type``, ``data``, ``keys`` and ``dataref`` are templated. The task fails when
the event cannot be made (bad type or data) or is not acknowledged within ``flush_timeout`` seconds (it stays
in the spool and may still arrive). The event id is the task's ``return_value`` XCom. In a run started by a
NATS event the event is caused by it (causation attributes, see ``lineage``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from databricks_nats.errors import PublishError
from databricks_nats.integrations.airflow.hooks import NatsHook

__all__ = ["NatsPublishOperator"]


class NatsPublishOperator(BaseOperator):
    """Publish ``event_type`` with ``data``; return the event id."""

    template_fields: Sequence[str] = ("event_type", "data", "keys", "dataref")
    template_fields_renderers = {"data": "json"}
    ui_color = "#27aae1"

    def __init__(
        self,
        *,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        keys: Sequence[str] | None = None,
        dataref: str | None = None,
        nats_conn_id: str = NatsHook.default_conn_name,
        flush_timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.event_type = event_type
        self.data = dict(data or {})
        self.keys = None if keys is None else list(keys)
        self.dataref = dataref
        self.nats_conn_id = nats_conn_id
        self.flush_timeout = flush_timeout

    def execute(self, context: Any) -> str:
        with NatsHook(self.nats_conn_id) as hook:
            event = hook.emit(self.event_type, self.data, keys=self.keys, dataref=self.dataref)
            if event is None:
                raise PublishError(f"{self.event_type} could not be made into an event (see the log)")
            result = hook.flush(self.flush_timeout)
            if not result.ok:
                raise PublishError(f"{self.event_type} {event.id} not acknowledged within {self.flush_timeout:g} s")
        self.log.info("published %s %s (%s)", self.event_type, event.id, event.subject)
        return str(event.id)
