"""``NatsEventTrigger``: an Airflow 3 event trigger on a durable JetStream consumer.

In an ``AssetWatcher`` the trigger runs in the triggerer for as long as the asset is watched. It reads the
stream through a **durable** consumer, so events published while the triggerer restarts, or while nothing
runs the trigger, are delivered when it runs again. Each matching event is yielded as a ``TriggerEvent``
whose payload is the CloudEvent exactly as published, and acknowledged only after the yield returned (the
triggerer took it); an event not acknowledged is delivered again. Connection failures are retried with
back-off; the durable consumer resumes where it stopped.

As a deferral trigger (``once=True``, what ``NatsEventSensor`` uses) it acknowledges the first matching
event, yields it and returns: the triggerer does not resume a deferral trigger after its event.

Secrets never go into the trigger's arguments (Airflow stores them in its database): credentials come
from the triggerer's environment (``DATABRICKS_NATS_TOKEN``, ``DATABRICKS_NATS_CREDS``, …), like every
other setting not given here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from databricks_nats.consumer import ReceivedEvent, Subscription
from databricks_nats.errors import ConfigurationError, SubjectError
from databricks_nats.integrations.airflow.conditions import accepts, normalize_where
from databricks_nats.model.filters import subject_filter
from databricks_nats.model.position import Start, StartPosition
from databricks_nats.settings import Settings, describe, resolve_settings

__all__ = ["NatsEventTrigger"]

CLASSPATH = "databricks_nats.integrations.airflow.triggers.NatsEventTrigger"
_CONNECTION = ("url", "workspace", "env", "subject_prefix", "stream")
_SETTINGS = frozenset(name for name, _env, _secret, _doc in describe())
_SECRETS = frozenset(name for name, _env, secret, _doc in describe() if secret)
_POLL = 30.0  # seconds one wait for an event lasts before it is started again
_BACKOFF = (0.5, 30.0)  # first and largest pause before reconnecting after a failure


class NatsEventTrigger(BaseEventTrigger):
    """Fire on every event of ``event_type`` whose data matches ``match`` and ``where``.

    :param event_type: e.g. ``"mlflow.model.alias_set"``; ``"mlflow.run.*"`` for every action of an
        entity; ``None`` for every event of the workspace/env.
    :param match: data fields that must be equal (``{"name": "main.ml.churn", "alias": "champion"}``;
        nested as ``a__b``). Subject-key fields (a model ``name``, a ``run_id``) also narrow the
        subject, so the server filters them.
    :param where: comparisons, ``[[field, op, value], ...]`` with op one of ``== != < <= > >= in
        not in exists`` (``[["metrics__rmse__value", ">", 0.3]]``).
    :param durable: the durable consumer's name; by default one derived from the namespace and the
        filters, so the same trigger resumes the same consumer after every restart.
    :param start: where a *new* consumer starts: ``"new"`` (default), ``"all"``, ``"last"``, a stream
        sequence, a datetime / ISO timestamp or a duration ago (``StartPosition``; stored resolved). An
        existing durable consumer resumes after its last acknowledged event.
    :param once: deferral trigger: acknowledge the first match, yield it, return.
    :param url, workspace, env, subject_prefix, stream: where to read; unset ones come from the
        triggerer's ``DATABRICKS_NATS_*`` environment.
    :param keys: subject keys of a custom event type (``["*", "users"]``).
    :param settings: other non-secret settings (``{"connect_timeout": 5, "tls_ca": "/etc/ca.pem"}``).
    """

    def __init__(
        self,
        *,
        event_type: str | None = None,
        match: Mapping[str, Any] | None = None,
        where: Sequence[Sequence[Any]] | None = None,
        durable: str | None = None,
        start: Start = "new",
        once: bool = False,
        url: str | Sequence[str] | None = None,
        workspace: str | None = None,
        env: str | None = None,
        subject_prefix: str | None = None,
        stream: str | None = None,
        keys: Sequence[str] | None = None,
        settings: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.event_type = event_type.removeprefix("databricks.") if event_type else None
        self.match = dict(match or {})
        self.where = normalize_where(where)
        self.start = StartPosition.parse(start).to_json()  # JSON: Airflow stores the trigger's arguments
        self.once = bool(once)
        self.url = url if url is None or isinstance(url, str) else ",".join(url)
        self.workspace = workspace
        self.env = env
        self.subject_prefix = subject_prefix
        self.stream = stream
        self.keys = None if keys is None else [str(k) for k in keys]
        self.settings = dict(settings or {})
        leaked = sorted(_SECRETS & set(self.settings))
        if leaked:
            raise ConfigurationError(
                leaked[0],
                "secrets are not trigger arguments (Airflow stores those in its database): set "
                f"DATABRICKS_NATS_{leaked[0].upper()} in the triggerer's environment",
            )
        unknown = sorted((set(self.settings) - _SETTINGS) | (set(self.settings) & set(_CONNECTION)))
        if unknown:
            raise ConfigurationError(unknown[0], "not a setting for settings={...} (connection fields are arguments)")
        json.dumps([self.match, self.where, self.settings])  # stored as JSON by Airflow: fail here, not later
        self.durable = durable if durable else (None if once else self._default_durable())

    # -- what Airflow stores -------------------------------------------------------------------------

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "event_type": self.event_type,
            "match": self.match,
            "where": self.where,
            "durable": self.durable,
            "start": self.start,
            "once": self.once,
            "keys": self.keys,
            "settings": self.settings,
        }
        kwargs.update({name: getattr(self, name) for name in _CONNECTION})
        return CLASSPATH, kwargs

    # -- reading -------------------------------------------------------------------------------------

    def resolved_settings(self) -> Settings:
        """The trigger's arguments over the environment of the process running it."""
        given = {name: getattr(self, name) for name in _CONNECTION if getattr(self, name)}
        return resolve_settings(**{**self.settings, **given})

    def subject_filters(self, settings: Settings | None = None) -> list[str]:
        """The JetStream subject filter the consumer uses."""
        namespace = (settings or self.resolved_settings()).namespace
        return [subject_filter(namespace, self.event_type, self.keys, **self.match)]

    def _default_durable(self) -> str:
        try:
            namespace = self.resolved_settings().namespace
        except ConfigurationError:
            namespace = ""
        spec = json.dumps(
            [namespace, self.event_type, self.keys, self.match, self.where, self.stream], sort_keys=True, default=str
        )
        return "airflow-" + hashlib.sha256(spec.encode()).hexdigest()[:20]

    def accepts(self, event: ReceivedEvent) -> bool:
        """True when the event's data passes ``match`` and ``where``."""
        return accepts(event.data, self.match, self.where)

    def _subscription(self) -> Subscription:
        settings = self.resolved_settings()
        filters = self.subject_filters(settings)
        return Subscription(settings, filters, self.durable, self.start, self.accepts, True)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        sub: Subscription | None = None
        pause = _BACKOFF[0]
        try:
            while True:
                if sub is None:
                    sub = self._subscription()
                try:
                    event = await sub.next_async(timeout=_POLL)
                except TimeoutError:
                    continue
                except (ConfigurationError, SubjectError):
                    raise
                except Exception as e:  # noqa: BLE001 - any broker or network failure: reconnect, resume
                    name = type(e).__name__
                    self.log.warning("NATS trigger %s: %s: %s; retrying in %.1f s", self.durable, name, e, pause)
                    await _close(sub)
                    sub = None
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, _BACKOFF[1])
                    continue
                pause = _BACKOFF[0]
                if self.once:
                    await event.ack_async()
                    yield TriggerEvent(event.envelope)
                    return
                yield TriggerEvent(event.envelope)
                await event.ack_async()
        finally:
            if sub is not None:
                await _close(sub)


async def _close(sub: Subscription) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection: nothing left to save
        await asyncio.wait_for(sub.close_async(), 5.0)
