"""The forwarder: Prefect flow-run and task-run state changes → NATS (``prefect.flow_run.*``, ``prefect.task_run.*``).

Why the event stream and not state hooks: hooks run inside the flow's process, so a state that process never
reaches (a run cancelled or crashed before it started, a process killed, a hook that is not attached) is never
published, and a hook publishing while NATS is down leaves the event in a spool on a worker that may be
discarded. The Prefect server records every state change as an event, whoever caused it; one forwarder reading
them is the complete source.

How: Prefect's event subscriber (``get_events_subscriber``, filter ``prefect.flow-run.*`` /
``prefect.task-run.*``) gives the changes as they happen; a **sweep** reads the same events through the REST
API (``/events/filter``, oldest first) at start and every ``sweep_interval`` seconds from the resume point
minus ``lookback``, so what the live stream missed (the forwarder down, a websocket reconnect, an event the
server persisted late) is forwarded too. The **resume point** — the newest ``occurred`` time forwarded and that
event's id — is written to ``state_file`` after the events are acknowledged by JetStream (flushed), and a
restart resumes from it, ``lookback`` seconds earlier.

Nothing twice: our event id is a UUIDv5 of the Prefect event id (the state's id), so the ``Nats-Msg-Id`` of a
re-forwarded event is the same and JetStream stores it once (within the stream's duplicate window, one hour by
default: keep ``lookback`` well below it). States other than running, completed, failed, crashed and
cancelled (scheduled, pending, paused…) are not forwarded. Causation: a flow run ``run_deployment_on`` started
carries its triggering event's causation in a tag; one an automation started on a bridged event is linked to it
by Prefect's record of the action (``lineage``); its events and its task runs' carry it on, one hop deeper.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from databricks_nats.integrations.prefect.bridging import Stop, _stopped, block_settings
from databricks_nats.integrations.prefect.lineage import automation_causation, causation_from_tags, deployment_target
from databricks_nats.transport.loop import blocking

__all__ = ["ForwardResult", "event_id_for", "forward", "forward_async"]

log = logging.getLogger("databricks_nats.prefect")

PREFIXES = ["prefect.flow-run.", "prefect.task-run."]
ACTIONS = {"RUNNING": "running", "COMPLETED": "completed", "FAILED": "failed", "CRASHED": "crashed",
           "CANCELLED": "cancelled"}  # fmt: skip
_NAMESPACE = uuid.UUID("6f1c3b7e-4a52-5d0e-9c1a-7d3e2b8f0a61")  # our ids for Prefect events: uuid5(_NAMESPACE, id)
POLL = 1.0
PAGE = 50  # the most /events/filter returns per page
KEEP_IDS = 100_000


def event_id_for(prefect_event_id: Any) -> str:
    """Our CloudEvent id (and ``Nats-Msg-Id``) for a Prefect event: a fixed UUIDv5 of its id."""
    return str(uuid.uuid5(_NAMESPACE, str(prefect_event_id)))


@dataclass
class ForwardResult:
    """What a forwarder run did: events published (our ids, oldest first), Prefect events skipped, why it stopped."""

    count: int = 0
    ids: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=10_000))
    skipped: int = 0
    stopped_by: str = ""


class _State:
    """The resume point in a small JSON file, replaced atomically."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None
        self.occurred: dt.datetime | None = None
        self.event_id = ""
        if self.path is not None and self.path.exists():
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            self.occurred = dt.datetime.fromisoformat(saved["occurred"])
            self.event_id = str(saved.get("id", ""))

    def advance(self, occurred: dt.datetime, event_id: str) -> None:
        if self.occurred is None or occurred > self.occurred:
            self.occurred, self.event_id = occurred, event_id

    def save(self) -> None:
        if self.path is None or self.occurred is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"occurred": self.occurred.isoformat(), "id": self.event_id}), encoding="utf-8")
        os.replace(tmp, self.path)


def _ui_url(kind: str, run_id: str) -> str | None:
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{str(base).rstrip('/')}/runs/{kind}/{run_id}" if base else None


def _ms(start: Any, end: dt.datetime) -> int | None:
    if not start:
        return None
    begun = start if isinstance(start, dt.datetime) else dt.datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    return max(0, int((end - begun).total_seconds() * 1000))


def _task_name(run_name: str, task_run: dict[str, Any]) -> str:
    """The task's name: Prefect names a task run ``<task name>-<first 3 characters of its dynamic key>``."""
    key = str(task_run.get("dynamic_key") or "")
    if key and run_name.endswith(f"-{key[:3]}"):
        return run_name[: -len(key[:3]) - 1]
    return re.sub(r"-\d+$", "", run_name)  # a custom task run name is kept (less a counter)


class _Runs:
    """Flow runs, flows and deployments read from the API (names cached; a flow run is read again per event)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.flows: dict[Any, str] = {}
        self.deployments: dict[Any, str | None] = {}

    async def flow_run(self, flow_run_id: str) -> tuple[Any, str, str | None]:
        run = await self.client.read_flow_run(uuid.UUID(flow_run_id))
        if run.flow_id not in self.flows:
            self.flows[run.flow_id] = (await self.client.read_flow(run.flow_id)).name
        deployment = None
        if run.deployment_id is not None:
            if run.deployment_id not in self.deployments:
                try:
                    self.deployments[run.deployment_id] = (await self.client.read_deployment(run.deployment_id)).name
                except Exception:  # noqa: BLE001 - a deleted deployment: no name
                    self.deployments[run.deployment_id] = None
            deployment = self.deployments[run.deployment_id]
        return run, self.flows[run.flow_id], deployment


async def _convert(event: Any, runs: _Runs) -> tuple[str, dict[str, Any], Any] | None:
    """``(event type, data, causation)`` for a Prefect state-change event, or None when it is not forwarded."""
    kind = "flow_run" if event.event.startswith("prefect.flow-run.") else "task_run"
    action = ACTIONS.get(str(event.resource.get("prefect.state-type", "")))
    if action is None:
        return None
    run_id = event.resource.id.rsplit(".", 1)[-1]
    when = event.occurred
    if kind == "flow_run":
        flow_run_id = run_id
    else:
        related = [r for r in event.related if r.role == "flow-run"]
        if not related:
            return None  # a task run outside any flow run (a background task): nothing to report it under
        flow_run_id = related[0].id.rsplit(".", 1)[-1]
    from prefect.exceptions import ObjectNotFound

    try:
        run, flow_name, deployment = await runs.flow_run(flow_run_id)
    except ObjectNotFound:  # deleted since: nothing left to describe it with
        log.warning("prefect-forward: flow run %s no longer exists; %s not forwarded", flow_run_id, event.event)
        return None
    data: dict[str, Any] = {
        "flow_run_id": flow_run_id,
        "flow_name": flow_name,
        "deployment_name": deployment,
        "state": event.resource.get("prefect.state-name") or action.capitalize(),
        "state_type": event.resource.get("prefect.state-type"),
        "duration_ms": None,
        "url": _ui_url("flow-run", flow_run_id),
    }
    if kind == "flow_run":
        if action != "running":
            data["duration_ms"] = _ms(run.start_time, when)
    else:
        task = (event.payload or {}).get("task_run") or {}
        name = str(event.resource.get("prefect.resource.name") or task.get("name") or run_id)
        data.update(task_run_id=run_id, task_name=_task_name(name, task), url=_ui_url("task-run", run_id))
        if action != "running":
            data["duration_ms"] = _ms(task.get("start_time"), when)
    causation = causation_from_tags(run.tags) or await automation_causation(
        runs.client, run, deployment_target(flow_name, deployment)
    )
    return f"prefect.{kind}.{action}", data, causation


def _publish(client: Any, event_type: str, data: dict[str, Any], causation: Any, when: dt.datetime, eid: str) -> None:
    from databricks_nats.model import catalog
    from databricks_nats.model.events import new_event

    catalog.lookup(event_type)
    event = new_event(event_type, data, time_ns=int(when.timestamp() * 1e9), causation=causation)
    event.id = eid
    client.start().emit(event)


async def forward_async(
    state_file: str | os.PathLike[str] | None = None,
    *,
    since: dt.datetime | None = None,
    lookback: float = 300.0,
    sweep_interval: float = 30.0,
    flush_timeout: float = 30.0,
    max_events: int | None = None,
    idle_timeout: float | None = None,
    stop: Stop = None,
    block: str | None = None,
    **settings: Any,
) -> ForwardResult:
    """Forward Prefect flow-run and task-run state changes to NATS until stopped (see the module docstring).

    ``state_file`` keeps the resume point (without one, each start begins at ``since``, default now).
    ``since`` is where a first start (no state file yet) begins. ``lookback`` seconds before the resume point
    are read again at each sweep (JetStream drops what was already stored). Stops after ``max_events``
    published, ``idle_timeout`` seconds without one, or when ``stop`` is set. ``block`` names a saved
    ``NatsSettings`` block; ``settings`` are keyword NATS settings (they win over the block's).
    """
    from prefect.client.orchestration import get_client
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder

    from databricks_nats.client import Client
    from databricks_nats.integrations.prefect.bridging import _require_api

    _require_api()
    settings = await block_settings(block, settings)
    state = _State(state_file)
    resumed = state.occurred is not None
    start = state.occurred or since or dt.datetime.now(dt.timezone.utc)
    floor = start - dt.timedelta(seconds=lookback) if resumed else start  # nothing older is forwarded
    result = ForwardResult()
    seen: collections.OrderedDict[str, None] = collections.OrderedDict()
    publisher = Client(**settings)
    names = EventNameFilter(prefix=PREFIXES)
    last_event = time.monotonic()

    async def handle(event: Any, runs: _Runs) -> None:
        nonlocal last_event
        key = str(event.id)
        if key in seen:
            return
        seen[key] = None
        if len(seen) > KEEP_IDS:
            seen.popitem(last=False)
        converted = await _convert(event, runs)
        if converted is None:
            result.skipped += 1
        else:
            event_type, data, causation = converted
            eid = event_id_for(event.id)
            _publish(publisher, event_type, data, causation, event.occurred, eid)
            flushed = await asyncio.to_thread(publisher.flush, flush_timeout)
            if not flushed.ok:  # kept in the spool; the resume point stays where it was
                log.warning(
                    "prefect-forward: NATS did not acknowledge within %gs; resuming from the last point", flush_timeout
                )
            result.count += 1
            result.ids.append(eid)
            last_event = time.monotonic()
            log.info("forwarded %s %s as %s", event.event, event.resource.id, event_type)
            if not flushed.ok:
                return
        state.advance(event.occurred, key)
        state.save()

    def done() -> bool:
        if max_events is not None and result.count >= max_events:
            result.stopped_by = "max_events"
        elif _stopped(stop):
            result.stopped_by = "stop"
        elif idle_timeout is not None and time.monotonic() - last_event >= idle_timeout:
            result.stopped_by = "idle_timeout"
        return bool(result.stopped_by)

    async def sweep(client: Any, runs: _Runs) -> None:
        """Read what was stored since the resume point (minus ``lookback``) and forward what was not yet."""
        since = max(floor, (state.occurred or start) - dt.timedelta(seconds=lookback))
        flt = EventFilter(
            event=names,
            occurred=EventOccurredFilter(since=since, until=dt.datetime.now(dt.timezone.utc)),
            order=EventOrder.ASC,
        )
        page = await client.read_events(filter=flt, limit=PAGE)
        while True:
            for event in page.events:
                if done():
                    return
                await handle(event, runs)
            if not page.next_page:
                return
            page = await client.read_events_page(page.next_page)

    try:
        async with get_client() as client:
            runs = _Runs(client)
            subscriber = get_events_subscriber(filter=EventFilter(event=names), reconnect_on_clean_close=True)
            async with subscriber:  # subscribed first, then the sweep: nothing falls between the two
                await sweep(client, runs)
                log.info("prefect-forward: following Prefect's events (resuming from %s)", state.occurred or start)
                next_sweep = time.monotonic() + sweep_interval
                iterator = subscriber.__aiter__()
                while not done():
                    if time.monotonic() >= next_sweep:
                        await sweep(client, runs)
                        next_sweep = time.monotonic() + sweep_interval
                        continue
                    try:
                        event = await asyncio.wait_for(iterator.__anext__(), POLL)
                    except asyncio.TimeoutError:
                        continue
                    if event.occurred >= floor:
                        await handle(event, runs)
    finally:
        await asyncio.to_thread(publisher.close, flush_timeout)
    return result


forward = blocking(forward_async, "forward")
