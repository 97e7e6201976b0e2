"""React to events: ``subscribe`` (a sync and async iterator) and ``wait_for``, on the JetStream stream.

Delivery is at least once. An event is acknowledged when the caller asks for the next one (its loop
body finished) or calls ``event.ack()``; one not acknowledged is delivered again, to the same durable
consumer after a restart. Every event keeps the id it was published with, so ``Dedupe`` (used by
default) drops the repeats a consumer has already seen.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as _dt
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from databricks_nats import _api
from databricks_nats._factory import default_identity
from databricks_nats.errors import StreamError, WaitTimeout
from databricks_nats.integrations.databricks import DatabricksSecrets
from databricks_nats.loopguard import LoopGuard
from databricks_nats.model.causation import Causation, Scope
from databricks_nats.model.events import Event
from databricks_nats.model.filters import matches, subject_filter
from databricks_nats.model.position import Start, StartPosition
from databricks_nats.ports import SecretSource
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.transport import reader
from databricks_nats.transport.errors import nats_errors, stream_error
from databricks_nats.transport.loop import LoopThread

__all__ = ["Dedupe", "ReceivedEvent", "Start", "Subscription", "subscribe", "wait_for"]

Match = Mapping[str, Any] | Callable[["ReceivedEvent"], bool] | None
FETCH = 16
LONG_POLL = 5.0


class ReceivedEvent(Event):
    """An event read from the stream: the published event plus where it was stored."""

    __slots__ = ("_msg", "env", "envelope", "seq", "source", "workspace")

    def __init__(self, msg: Any) -> None:
        envelope = json.loads(msg.data)
        data = envelope.get("data")
        stamp = _dt.datetime.fromisoformat(str(envelope.get("time", "")).replace("Z", "+00:00"))
        super().__init__(
            str(envelope.get("type", "")).removeprefix("databricks."),
            data if isinstance(data, dict) else {"value": data},
            dataref=envelope.get("dataref"),
            id=envelope.get("id"),
            time_ns=int(stamp.timestamp() * 1_000_000) * 1000,
            traceparent=envelope.get("traceparent"),
            subject=msg.subject,
            causation=Causation.of(envelope),
        )
        self.envelope: dict[str, Any] = envelope
        self.source: str = envelope.get("source", "")
        self.workspace: str | None = envelope.get("workspace")
        self.env: str | None = envelope.get("env")
        self.seq: int = int(msg.metadata.sequence.stream)
        self._msg = msg

    def ack(self) -> None:
        """Acknowledge now (``subscribe`` otherwise does it when the next event is asked for)."""
        if self._msg is not None:
            msg, self._msg = self._msg, None
            _LOOPS.run(msg.ack(), 10.0)

    async def ack_async(self) -> None:
        if self._msg is not None:
            msg, self._msg = self._msg, None
            await msg.ack()


class Dedupe:
    """Remembers the last ``size`` event ids; ``seen(event)`` is True for a repeat."""

    def __init__(self, size: int = 100_000) -> None:
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.size = size
        self.dropped = 0

    def seen(self, event: Event) -> bool:
        if event.id in self._ids:
            self._ids.move_to_end(event.id)
            self.dropped += 1
            return True
        self._ids[event.id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return False


_LOOPS = LoopThread("databricks-nats-consumer")  # the sync iterators' connections live on this loop


class Subscription:
    """Events matching a filter, in stream order; iterate with ``for`` or ``async for``; close when done."""

    def __init__(
        self,
        settings: Settings,
        filters: list[str],
        durable: str | None,
        start: Start,
        match: Match,
        dedupe: bool,
        secrets: SecretSource | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets if secrets is not None else DatabricksSecrets()
        self.filters = filters
        self.durable = durable
        self.start = StartPosition.parse(start)
        self.match = match
        self.dedupe = Dedupe() if dedupe else None
        self.guard = LoopGuard(f"subscribe:{durable}" if durable else None, settings.hop_limit)
        self._nc: Any = None
        self._sub: Any = None
        self._buffer: collections.deque[Any] = collections.deque()
        self._last: ReceivedEvent | None = None

    async def _open(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig

        self._nc = await reader.connect(self.settings, "consumer", self.secrets, default_identity(self.settings))
        js = self._nc.jetstream()
        stream = self.settings.stream_name
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=60, max_ack_pending=1000)
        for name, value in reader.deliver_options(self.start).items():
            setattr(config, name, value)
        if len(self.filters) == 1:
            config.filter_subject = self.filters[0]
        else:
            config.filter_subjects = self.filters
        if self.durable:
            config.durable_name = self.durable
        else:
            config.inactive_threshold = 30.0
        try:
            info = await js.add_consumer(stream, config)
        except Exception as e:
            if not self.durable:
                raise stream_error(f"read stream {stream!r}", e) from e
            info = await self._existing(js, stream, e)
        self._sub = await js.pull_subscribe_bind(info.name, stream=stream)

    async def _existing(self, js: Any, stream: str, error: Exception) -> Any:
        """A durable consumer that already exists resumes where it stopped, if it has the same filters."""
        with nats_errors(f"create consumer {self.durable!r} on {stream!r} ({type(error).__name__}: {error})"):
            info = await js.consumer_info(stream, self.durable)
        have = list(info.config.filter_subjects or [info.config.filter_subject])
        if sorted(have) != sorted(self.filters):
            raise StreamError(f"durable consumer {self.durable!r} exists with filters {have}, not {self.filters}")
        return info

    async def next_async(self, timeout: float | None = None) -> ReceivedEvent:
        """The next matching event (acknowledging the previous one); ``WaitTimeout`` (a ``TimeoutError``) after
        ``timeout`` seconds."""
        if self._last is not None:
            await self._last.ack_async()
            self._last = None
        if self._sub is None:
            await self._open()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._buffer:
                event = ReceivedEvent(self._buffer.popleft())
                if self._wanted(event):
                    self._last = event
                    return event
                await event.ack_async()
            left = LONG_POLL if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"no event within {timeout:g} s")
            try:
                self._buffer.extend(await self._sub.fetch(FETCH, timeout=min(LONG_POLL, max(left, 0.05))))
            except asyncio.TimeoutError:
                continue

    def hold(self) -> None:
        """Take the last event out of automatic acknowledgement: the caller acknowledges it (``event.ack()``)
        when done, e.g. after looking at what arrives next (acting on the newest of a burst)."""
        self._last = None

    def _wanted(self, event: ReceivedEvent) -> bool:
        """Not a repeat, matching, and continuing no loop. The loop guard comes last: an event the caller would
        have ignored anyway is no loop (counting or announcing it would be a false report)."""
        if self.dedupe is not None and self.dedupe.seen(event):
            return False
        if self.match is not None and not (
            self.match(event) if callable(self.match) else matches(event.data, self.match)
        ):
            return False
        return self.guard.allows(event.envelope)  # a loop: acknowledged, counted, announced, not handed over

    async def close_async(self) -> None:
        """Hand back what was fetched but not acknowledged (redelivered at once), then disconnect."""
        if self._nc is None:
            return
        pending = [m for m in [getattr(self._last, "_msg", None), *self._buffer] if m is not None]
        self._buffer.clear()
        self._last = None
        with contextlib.suppress(Exception):  # the server redelivers after ack_wait anyway
            for msg in pending:
                await msg.nak()
        nc, self._nc, self._sub = self._nc, None, None
        await nc.close()

    def next(self, timeout: float | None = None) -> ReceivedEvent:
        return _LOOPS.run(self.next_async(timeout))

    def close(self) -> None:
        """Close the connection; the last event, if not acknowledged, will be delivered again."""
        _LOOPS.run(self.close_async(), 10.0)

    def __iter__(self) -> Iterator[ReceivedEvent]:
        """Every matching event; what the loop body emits is caused by the event at hand (see ``_Handling``)."""
        return _Handling(self, self._events())

    def __aiter__(self) -> AsyncIterator[ReceivedEvent]:
        return _Handling(self, self._events_async())

    def _events(self) -> Iterator[ReceivedEvent]:
        try:
            while True:
                yield self.next()
        finally:
            self.close()

    async def _events_async(self) -> AsyncIterator[ReceivedEvent]:
        try:
            while True:
                yield await self.next_async()
        finally:
            await self.close_async()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handling:
    """A loop over a subscription: each event's causation is current only while the loop body handles it.

    Current from the moment the event is handed over until the loop asks for the next one, or drops this
    iterator (``break``, an exception: CPython releases it at once, in the loop's own context). The events
    come from a generator that closes the subscription when it is closed (the async one by the event loop).
    """

    __slots__ = ("_events", "_scope", "_sub")

    def __init__(self, sub: Subscription, events: Any) -> None:
        self._sub, self._events = sub, events
        self._scope: Scope | None = None

    def _handled(self, event: ReceivedEvent) -> ReceivedEvent:
        self._scope = Scope(Causation.from_envelope(event.envelope, self._sub.guard.target))
        return event

    def _end(self) -> None:
        if self._scope is not None:
            self._scope.end()
            self._scope = None

    def __iter__(self) -> _Handling:
        return self

    def __next__(self) -> ReceivedEvent:
        self._end()
        return self._handled(next(self._events))

    def __aiter__(self) -> _Handling:
        return self

    async def __anext__(self) -> ReceivedEvent:
        self._end()
        return self._handled(await self._events.__anext__())

    def __del__(self) -> None:
        self._end()


def _settings(overrides: dict[str, Any]) -> Settings:
    return resolve_settings(**overrides) if overrides else _api.get_settings()


def subscribe(
    event_type: str | None = None,
    *,
    match: Match = None,
    durable: str | None = None,
    start: Start = "new",
    keys: Any = None,
    subjects: list[str] | None = None,
    dedupe: bool = True,
    secrets: SecretSource | None = None,
    **settings: Any,
) -> Subscription:
    """Subscribe to the events of ``event_type`` (default: every event of this workspace/env).

    ``match`` keeps only events whose data has these field values (subject-key fields such as a model
    ``name`` also narrow the subject, so the server filters them) or for which a callable returns True.
    ``durable`` names a consumer that survives restarts and resumes after the last acknowledged event;
    ``start`` (for a new consumer) is ``"new"`` (default), ``"all"``, ``"last"``, a stream sequence, a time or
    a duration ago such as ``"10m"`` (``StartPosition``); an invalid one raises ``ConfigurationError``.
    ``secrets`` reads a ``secret_scope`` or ``{{secrets/…}}`` references (default: Databricks secret scopes).
    In a ``for`` / ``async for`` body, what is emitted is caused by the event at hand (``causationid`` …); after
    the loop (``break``, an exception) the causation is what it was before it.
    """
    resolved = _settings(settings)
    fields = dict(match) if isinstance(match, Mapping) else {}
    filters = list(subjects or [subject_filter(resolved.namespace, event_type, keys, **fields)])
    return Subscription(resolved, filters, durable, start, match, dedupe, secrets)


def wait_for(
    event_type: str,
    *,
    match: Match = None,
    timeout: float = 60.0,
    start: Start = "new",
    **settings: Any,
) -> ReceivedEvent:
    """The first event of ``event_type`` matching ``match``; raises ``WaitTimeout`` after ``timeout`` seconds.

    Typical use: ``wait_for("mlflow.model.version_created", match={"name": "main.ml.churn"}, start=since)``.
    """
    sub = subscribe(event_type, match=match, start=start, **settings)
    try:
        event = sub.next(timeout)
        event.ack()
        return event
    except TimeoutError:
        raise WaitTimeout(f"no {event_type} event matching {match!r} within {timeout:g} s") from None
    finally:
        sub.close()
