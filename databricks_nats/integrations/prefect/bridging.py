"""The bridge: NATS JetStream (durable consumer) → Prefect events, one Prefect event per CloudEvent.

Each event read with ``databricks_nats.consumer.subscribe`` is sent to the Prefect API with Prefect's own
events client, and the NATS message is acknowledged only after Prefect confirmed receipt (a websocket
ping/pong after the event, the same checkpoint Prefect uses to know an event was delivered). If sending
fails the bridge stops with the error and the message is handed back to JetStream: the durable consumer
delivers it again when the bridge restarts. Redelivered events keep their id, which is the Prefect event
id, so Prefect stores them once and its triggers fire once. The payload is the whole CloudEvent, causation
attributes included: that is how a flow run an automation starts on it is linked back to its chain
(``lineage``).

A stream that does not exist yet (the bridge started before anything created it) is waited for: the bridge
logs once that it waits, with how to create it (``databricks-nats streams ensure``), and retries every few
seconds; the stop conditions still apply.

Why not ``prefect.events.emit_event``: it puts the event on a background queue and returns, and a failed
send there is logged and dropped, so nothing tells the bridge when it may acknowledge. The events are the
same (``prefect_event_fields`` gives ``emit_event``'s keyword arguments).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from databricks_nats.consumer import Match, ReceivedEvent, Start, subscribe
from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.prefect.resources import ResourceRule, prefect_event_fields
from databricks_nats.transport.loop import blocking
from databricks_nats.values import redact_url

__all__ = ["BridgeResult", "SignalStop", "Stop", "block_settings", "bridge", "bridge_async", "stop_on_signals"]

log = logging.getLogger("databricks_nats.prefect")

DEFAULT_DURABLE = "prefect-bridge"
POLL = 1.0  # seconds between checks of the stop condition while no event arrives
STREAM_RETRY = 3.0  # seconds between attempts while the stream does not exist
KEEP_IDS = 10_000

Stop = threading.Event | asyncio.Event | Callable[[], bool] | None
T = TypeVar("T")


@dataclass
class BridgeResult:
    """What a bridge run did: how many events it handled and the ids of the last ones (oldest first)."""

    count: int = 0
    ids: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=KEEP_IDS))
    flow_runs: collections.deque[Any] = field(default_factory=lambda: collections.deque(maxlen=KEEP_IDS))
    stopped_by: str = ""
    refused: int = 0  # events not acted on: they would continue a loop (run_deployment_on)


def _stopped(stop: Stop) -> bool:
    if stop is None:
        return False
    if isinstance(stop, (threading.Event, asyncio.Event)):
        return stop.is_set()
    return bool(stop())


async def pump(
    sub: Any,
    handle: Callable[[ReceivedEvent], Awaitable[Any]],
    result: BridgeResult,
    *,
    max_events: int | None,
    idle_timeout: float | None,
    stop: Stop,
) -> BridgeResult:
    """Hand each event to ``handle``; acknowledge it when ``handle`` returned; stop on the first condition met.

    An exception from ``handle`` propagates and the event is not acknowledged (closing the subscription
    hands it back to JetStream, which delivers it again).
    """
    last = time.monotonic()
    waiting = [False]
    try:
        while True:
            if max_events is not None and result.count >= max_events:
                result.stopped_by = "max_events"
                break
            if _stopped(stop):
                result.stopped_by = "stop"
                break
            wait = POLL
            if idle_timeout is not None:
                left = idle_timeout - (time.monotonic() - last)
                if left <= 0:
                    result.stopped_by = "idle_timeout"
                    break
                wait = min(wait, left)
            try:
                event = await _next(sub, wait, waiting)
            except TimeoutError:
                continue
            outcome = await handle(event)
            await event.ack_async()
            result.count += 1
            result.ids.append(event.id)
            if outcome is not None:
                result.flow_runs.append(outcome)
            last = time.monotonic()
    finally:
        await sub.close_async()
    return result


def stream_missing(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) is JetStream's "stream not found"."""
    seen: BaseException | None = error
    while seen is not None:
        if getattr(seen, "err_code", None) == 10059 or "stream not found" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _next(sub: Any, wait: float, waiting: list[bool]) -> Any:
    """The next event within ``wait`` seconds; while the stream is missing, say so once and raise TimeoutError."""
    try:
        event = await sub.next_async(wait)
    except Exception as e:
        if isinstance(e, TimeoutError) or not stream_missing(e):
            raise
        await sub.close_async()  # the half-open connection; the next attempt opens a new one
        if not waiting[0]:
            waiting[0] = True
            log.warning(
                "databricks-nats: stream %s does not exist yet on %s; waiting for it "
                "(create it with: databricks-nats streams ensure --workspace %s --env %s)",
                sub.settings.stream_name,
                redact_url(",".join(sub.settings.url)),
                sub.settings.workspace,
                sub.settings.env,
            )
        await asyncio.sleep(min(wait, STREAM_RETRY))
        raise TimeoutError("stream missing") from None
    if waiting[0]:
        waiting[0] = False
        log.warning("databricks-nats: stream %s found; reading", sub.settings.stream_name)
    return event


def _require_api() -> None:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ConfigurationError(
            "PREFECT_API_URL",
            "not set: the bridge sends events to a running Prefect server or Prefect Cloud "
            "(set PREFECT_API_URL, and PREFECT_API_KEY for Cloud)",
        )


async def bridge_async(
    event_type: str | None = None,
    *,
    match: Match = None,
    durable: str = DEFAULT_DURABLE,
    start: Start = "new",
    resource_id: ResourceRule | None = None,
    max_events: int | None = None,
    idle_timeout: float | None = None,
    stop: Stop = None,
    subjects: list[str] | None = None,
    block: str | None = None,
    **settings: Any,
) -> BridgeResult:
    """Forward every event of ``event_type`` (default: all of this workspace/env) to Prefect as a Prefect event.

    Reads with the durable JetStream consumer ``durable`` (created with ``start`` the first time, then
    resuming after the last acknowledged event), keeps those whose data matches ``match``, emits each to
    the Prefect API in ``PREFECT_API_URL`` and acknowledges it once Prefect confirmed it. Runs until
    ``max_events`` were forwarded, no event came for ``idle_timeout`` seconds, or ``stop`` (a
    ``threading.Event``, ``asyncio.Event`` or callable) is set; with none of them, for ever.
    ``resource_id(envelope)`` may override the resource id of an event; ``settings`` are the NATS
    settings (``url``, ``workspace``, ``env``, ...) as for ``databricks_nats.configure``. ``bridge`` is the
    same, blocking. ``block`` names a saved ``NatsSettings`` block (keyword settings win over it).
    """
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    _require_api()
    settings = await block_settings(block, settings)
    sub = subscribe(event_type, match=match, durable=durable, start=start, subjects=subjects, **settings)
    result = BridgeResult()
    async with get_events_client(checkpoint_every=1) as client:

        async def forward(event: ReceivedEvent) -> None:
            prefect_event = Event(**prefect_event_fields(event.envelope, resource_id))
            await client.emit(prefect_event)  # returns once Prefect confirmed receipt (checkpoint_every=1)
            log.info("bridged %s %s as %s", event.type, event.id, prefect_event.resource.id)

        return await pump(sub, forward, result, max_events=max_events, idle_timeout=idle_timeout, stop=stop)


bridge = blocking(bridge_async, "bridge")


async def block_settings(block: str | None, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` over those of the saved ``NatsSettings`` block ``block`` (None: ``settings`` alone)."""
    if block is None:
        return settings
    from databricks_nats.integrations.prefect.blocks import NatsSettings

    return {**(await NatsSettings.aload(block)).settings(), **settings}


class SignalStop(asyncio.Event):
    """An ``asyncio.Event`` that remembers the signal that set it (``received``: ``"SIGTERM"``…)."""

    received = ""

    def on(self, sig: signal.Signals) -> None:
        self.received = sig.name
        self.set()


def stop_on_signals() -> SignalStop:
    """An ``asyncio.Event`` set by SIGINT or SIGTERM (call inside the running loop), for a long-lived bridge."""
    stop = SignalStop()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.on, sig)
    return stop
