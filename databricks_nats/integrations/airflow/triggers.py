"""``NatsEventTrigger``: an Airflow 3 event trigger on a durable JetStream consumer.

In an ``AssetWatcher`` the trigger runs in the triggerer for as long as the asset is watched. It reads the
stream through a **durable** consumer, so events published while the triggerer restarts, or while nothing
runs the trigger, are delivered when it runs again. Each matching event is yielded as a ``TriggerEvent``
whose payload is the CloudEvent exactly as published, and acknowledged only after the yield returned (the
triggerer took it); an event not acknowledged is delivered again. Connection failures are retried with
back-off; the durable consumer resumes where it stopped.

As a deferral trigger (``once=True``, what ``NatsEventSensor`` uses) it acknowledges the first matching
event, yields it and returns: the triggerer does not resume a deferral trigger after its event.

**Loops.** Before acting, the trigger asks a ``LoopGuard``: an event whose chain is at the hop limit
(``hop_limit`` setting, default 8), or already went through this trigger's DAG (``dag_id``: the trigger is tied
to an asset, so it learns its DAG only from this argument; ``NatsEventSensor`` passes its own), is
acknowledged, counted (``refused``), logged and announced once per chain as ``system.loop.detected``.

**Paused DAGs.** Airflow runs an asset's watchers only while a DAG scheduled on it is unpaused, so the durable
consumer is created on the first unpause and starts at ``start``: ``"new"`` (default) misses what was
published before; an explicit time (``start="2026-12-01T00:00:00Z"``) catches up from there. Once the consumer
exists, ``paused="catch_up"`` (default) delivers what was published while the DAG was paused when it is
unpaused; ``paused="skip"`` acknowledges and drops every event the stream had stored when the trigger started
running (the unpause, but also a triggerer restart: the two look the same from here). It decides by the
stream, not by clocks: the stream's last sequence, read when ``run()`` starts, is the mark; an event stored
after it is delivered, however old its ``time`` (a publisher's spool sent after an outage, a skewed clock).

**Newest only.** ``newest_only=True`` waits ``coalesce`` seconds (default 0.5) after a matching event for
more, and hands over only the newest event of each subject and ``alias`` (``newest_key``: two moves of a
model's champion alias 55 ms apart: only the second; a move of its challenger alias in the same burst is kept),
acknowledging the ones it superseded; a run then never starts for a version already replaced.

Secrets never go into the trigger's arguments (Airflow stores them in its database): credentials come
from the triggerer's environment (``DATABRICKS_NATS_TOKEN``, ``DATABRICKS_NATS_CREDS``, …), like every
other setting not given here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from databricks_nats._factory import default_identity
from databricks_nats.consumer import ReceivedEvent, Subscription
from databricks_nats.errors import ConfigurationError, SubjectError
from databricks_nats.integrations.airflow.conditions import accepts, normalize_where
from databricks_nats.integrations.airflow.lineage import dag_target
from databricks_nats.loopguard import LoopGuard
from databricks_nats.model.filters import subject_filter
from databricks_nats.model.position import Start, StartPosition
from databricks_nats.settings import Settings, describe, resolve_settings
from databricks_nats.transport import reader

__all__ = ["NatsEventTrigger"]

CLASSPATH = "databricks_nats.integrations.airflow.triggers.NatsEventTrigger"
_CONNECTION = ("url", "workspace", "env", "subject_prefix", "stream")
_SETTINGS = frozenset(name for name, _env, _secret, _doc in describe())
_SECRETS = frozenset(name for name, _env, secret, _doc in describe() if secret)
_POLL = 30.0  # seconds one wait for an event lasts before it is started again
_BACKOFF = (0.5, 30.0)  # first and largest pause before reconnecting after a failure
PAUSED = ("catch_up", "skip")


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
    :param dag_id: the DAG this trigger starts, for loop protection (``airflow:dag/<dag_id>``); without it
        only the hop limit applies.
    :param paused: ``"catch_up"`` (default) or ``"skip"``: events the stream stored before the trigger started
        running (while the DAG was paused) are delivered, or acknowledged and dropped (by stream sequence).
    :param newest_only: hand over only the newest event of each subject and alias (``newest_key``) among
        those arriving within ``coalesce`` seconds.
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
        dag_id: str | None = None,
        paused: str = "catch_up",
        newest_only: bool = False,
        coalesce: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if paused not in PAUSED:
            raise ConfigurationError("paused", f"paused is one of {', '.join(PAUSED)}, not {paused!r}")
        self.dag_id = dag_id or None
        self.paused = paused
        self.newest_only = bool(newest_only)
        self.coalesce = float(coalesce)
        self.guard: LoopGuard | None = None  # made when run: counts refusals for as long as the trigger runs
        self.skipped = 0  # events dropped by paused="skip"
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
            "dag_id": self.dag_id,
            "paused": self.paused,
            "newest_only": self.newest_only,
            "coalesce": self.coalesce,
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
        sub = Subscription(settings, filters, self.durable, self.start, self.accepts, True)
        if self.guard is None:
            target = dag_target(self.dag_id) if self.dag_id else None
            self.guard = LoopGuard(target, settings.hop_limit, _Announcer(settings))
        sub.guard = self.guard  # one guard across reconnects: a chain is announced once
        return sub

    async def _batch(self, sub: Subscription, first: ReceivedEvent) -> list[ReceivedEvent]:
        """``first`` and what arrives within ``coalesce`` s, none acknowledged (``newest_only``)."""
        batch = [first]
        sub.hold()  # acknowledged by run(), not by the next fetch
        deadline = time.monotonic() + self.coalesce
        while (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(await sub.next_async(timeout=left))
            except TimeoutError:
                break
            sub.hold()
        return batch

    async def run(self) -> AsyncIterator[TriggerEvent]:
        sub: Subscription | None = None
        pause = _BACKOFF[0]
        mark: int | None = None  # paused="skip": the stream's last sequence when run() started
        try:
            while True:
                if sub is None:
                    sub = self._subscription()
                try:
                    if mark is None and self.paused == "skip":
                        mark = await _last_seq(sub)  # once per run(), before the first event: kept on reconnects
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
                if mark is not None and event.seq <= mark:
                    self.skipped += 1
                    self.log.info("NATS trigger %s: skipped %s (stored before it started)", self.durable, event.id)
                    continue  # acknowledged by the next fetch
                batch = await self._batch(sub, event) if self.newest_only else [event]
                keep = _newest(batch)
                if self.once:
                    keep = keep[-1:]
                for old in batch:
                    if old not in keep:
                        await old.ack_async()  # superseded by a newer event of the same newest_key
                for chosen in keep:
                    if self.once:
                        await chosen.ack_async()
                        yield TriggerEvent(chosen.envelope)
                        return
                    yield TriggerEvent(chosen.envelope)
                    await chosen.ack_async()
        finally:
            if sub is not None:
                await _close(sub)


def newest_key(event: ReceivedEvent) -> tuple[str, str | None]:
    """What ``newest_only`` keeps one event of: the subject (event type and subject keys, e.g. the model) and
    the ``alias`` data field when there is one (each alias of a model moves on its own)."""
    alias = event.data.get("alias")
    return event.subject or "", None if alias is None else str(alias)


def _newest(batch: list[ReceivedEvent]) -> list[ReceivedEvent]:
    """The newest event of each ``newest_key`` in ``batch``, in stream order."""
    newest: dict[tuple[str, str | None], ReceivedEvent] = {}
    for event in batch:
        key = newest_key(event)
        have = newest.get(key)
        if have is None or event.seq > have.seq:
            newest[key] = event
    return sorted(newest.values(), key=lambda e: e.seq)


async def _last_seq(sub: Subscription) -> int:
    """The stream's last sequence now (a connection of its own: the subscription's is not ours to share)."""
    settings = sub.settings
    nc = await reader.connect(settings, "trigger", sub.secrets, default_identity(settings))
    try:
        return (await reader.bounds(nc.jetstream(), settings.stream_name))[1]
    finally:
        await nc.close()


class _Announcer:
    """The client ``system.loop.detected`` goes through: the trigger's own settings, made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None

    def emit(self, *args: Any, **kwargs: Any) -> Any:
        if self._client is None:
            from databricks_nats.client import Client

            self._client = Client(self.settings)
        return self._client.emit(*args, **kwargs)


async def _close(sub: Subscription) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection: nothing left to save
        await asyncio.wait_for(sub.close_async(), 5.0)
