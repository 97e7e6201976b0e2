"""``NatsEventSensor``: wait in a classic DAG until an event arrives; the CloudEvent goes to XCom.

Deferrable by default: the worker slot is released and the triggerer waits (``NatsEventTrigger`` with
``once=True``). The sensor's return value, the CloudEvent as published, is the task's ``return_value``
XCom, so downstream tasks read ``ti.xcom_pull(task_ids="wait_for_champion")["data"]["version"]``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout

from databricks_nats.errors import StreamError
from databricks_nats.integrations.airflow.triggers import NatsEventTrigger
from databricks_nats.model.position import Start
from databricks_nats.transport.loop import run_sync

__all__ = ["NatsEventSensor"]


class NatsEventSensor(BaseSensorOperator):
    """Succeed with the first event of ``event_type`` matching ``match`` / ``where``; return its CloudEvent.

    ``start`` (default: when the DAG run started) is the oldest event that counts, so an event published by
    an earlier task of the same run is not missed; with ``durable=...`` the sensor instead reads a durable
    consumer, and every run takes the next event after the one the previous run took. The other arguments
    are those of ``NatsEventTrigger``. ``deferrable=False`` waits in the worker instead of the triggerer.
    ``newest_only=True`` returns the newest matching event among those arriving within ``coalesce`` seconds
    of the first. An event whose chain already went through this DAG, or is at the hop limit, is refused
    (``system.loop.detected``) and the sensor keeps waiting.
    """

    template_fields: Sequence[str] = ("event_type", "match", "where", "durable", "start")
    ui_color = "#27aae1"

    def __init__(
        self,
        *,
        event_type: str | None = None,
        match: Mapping[str, Any] | None = None,
        where: Sequence[Sequence[Any]] | None = None,
        durable: str | None = None,
        start: Start | None = None,
        url: str | Sequence[str] | None = None,
        workspace: str | None = None,
        env: str | None = None,
        subject_prefix: str | None = None,
        stream: str | None = None,
        keys: Sequence[str] | None = None,
        settings: Mapping[str, Any] | None = None,
        deferrable: bool = True,
        newest_only: bool = False,
        coalesce: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.event_type = event_type
        self.match = dict(match or {})
        self.where = where
        self.durable = durable
        self.start = start
        self.url = url
        self.workspace = workspace
        self.env = env
        self.subject_prefix = subject_prefix
        self.stream = stream
        self.keys = keys
        self.settings = dict(settings or {})
        self.deferrable = deferrable
        self.newest_only = newest_only
        self.coalesce = coalesce
        self.trigger(start="new")  # bad filters or settings fail when the DAG is parsed, not when it runs

    def trigger(self, start: Start, dag_id: str | None = None) -> NatsEventTrigger:
        """The deferral trigger this sensor hands to the triggerer."""
        return NatsEventTrigger(
            dag_id=dag_id,
            newest_only=self.newest_only,
            coalesce=self.coalesce,
            event_type=self.event_type,
            match=self.match,
            where=self.where,
            durable=self.durable,
            start=start,
            once=True,
            stream=self.stream,
            keys=self.keys,
            settings=self.settings,
            url=self.url,
            workspace=self.workspace,
            env=self.env,
            subject_prefix=self.subject_prefix,
        )

    def _start(self, context: Mapping[str, Any]) -> Start:
        if self.start is not None:
            return self.start
        dag_run = context.get("dag_run")
        began = getattr(dag_run, "start_date", None)
        return began if isinstance(began, _dt.datetime) else _dt.datetime.now(_dt.timezone.utc)

    def execute(self, context: Any) -> dict[str, Any]:
        dag_run = context.get("dag_run")
        trigger = self.trigger(self._start(context), getattr(dag_run, "dag_id", None) or self.dag_id)
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_complete", timeout=_dt.timedelta(seconds=self.timeout))
        try:
            payload = run_sync(_first(trigger), self.timeout)
        except asyncio.TimeoutError:
            raise AirflowSensorTimeout(f"no {self.event_type} event within {self.timeout:g} s") from None
        return self.execute_complete(context, payload)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """The CloudEvent, returned so that it becomes the ``return_value`` XCom."""
        self.log.info("NATS event %s %s (%s)", event.get("type"), event.get("id"), event.get("subject"))
        return event


async def _first(trigger: NatsEventTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload  # type: ignore[no-any-return]
    raise StreamError("the NATS trigger ended without an event")
