"""Causation across a Prefect flow run: the bridge writes it on the flow run as a tag, the forwarder reads it back.

``run_deployment_on`` starts a flow run for a NATS event. Everything that flow run causes on NATS — its own
``prefect.flow_run.*`` events, its task runs' ``prefect.task_run.*`` events (the forwarder) and the events its
``publish`` task emits — is caused by that event, reached through ``prefect:deployment/<name>``.

Where it is kept: one **tag** on the flow run, ``databricks-nats.causation:<attributes, url-encoded>``. Tags, not
parameters: a deployment enforces its flow's parameter schema, so an extra parameter would be refused (or would
force every flow to declare it); ``run_deployment`` sets tags on any flow run; Prefect copies them onto the flow
run's events (related ``prefect.tag.*`` resources) and its task runs, so both the forwarder and code running
inside the flow can read them back. The tag holds what the caused events carry (``Causation.attributes()``:
``causationid``, ``correlationid``, ``hop``, ``via``), so reading it back is exact.

**Through an automation** (the plain ``bridge`` plus a ``DeploymentEventTrigger``) no tag can be set: Prefect's
``RunDeployment`` action creates the flow run itself. What Prefect records links it back instead, and that link
is what ``automation_causation`` follows: the flow run's ``created_by`` is ``AUTOMATION``; the action's
``prefect.automation.action.triggered`` / ``executed`` events name the created flow run (related resource
``prefect.flow-run.<id>``, role ``flow-run``) and the event that fired it (``prefect.event.<id>``, role
``triggering-event``); that event, when the bridge sent it, has our CloudEvent as its payload (its id is the
CloudEvent id), causation attributes included. The flow run is then caused by it exactly as if
``run_deployment_on`` had started it (via ``prefect:deployment/<flow>/<deployment>``). The action's events are
persisted a moment after the flow run is created, so a lookup waits for them (``LINK_WAIT`` seconds at most). A
flow run whose automation fired on anything else (a Prefect event, a schedule, a compound trigger's last event
that was not bridged) has no causation.

``caused_by_flow_run()`` makes the flow run's causation current in a block, so a plain ``databricks_nats.emit``
(or an MLflow hook's event) inside a flow carries it too; the ``publish`` task does this by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from databricks_nats.model.causation import Causation, caused_by

__all__ = [
    "TAG_PREFIX",
    "automation_causation",
    "by_automation",
    "causation_from_tags",
    "causation_tag",
    "caused_by_flow_run",
    "deployment_target",
    "flow_run_causation",
]

log = logging.getLogger("databricks_nats.prefect")

TAG_PREFIX = "databricks-nats.causation:"
ACTION_EVENTS = ["prefect.automation.action.triggered", "prefect.automation.action.executed"]
LINK_WAIT = 30.0  # seconds to wait for an automation's action events to be persisted
_POLL = 0.5
_KEEP = 1024  # flow runs whose automation causation is remembered (in this process)
_known: OrderedDict[str, Causation | None] = OrderedDict()


def causation_tag(causation: Causation) -> str:
    """The flow run tag carrying ``causation``."""
    return TAG_PREFIX + urlencode(sorted(causation.attributes().items()))


def causation_from_tags(tags: Iterable[str] | None) -> Causation | None:
    """The causation a flow run's tags carry, or None (no tag, or one that does not parse)."""
    for tag in tags or ():
        if isinstance(tag, str) and tag.startswith(TAG_PREFIX):
            attributes = dict(parse_qsl(tag[len(TAG_PREFIX) :]))
            found = Causation.of(attributes)
            if found is not None:
                return found
    return None


def deployment_target(flow_name: str, deployment_name: str | None) -> str | None:
    """The target a deployment's flow runs are reached through (as ``run_deployment_on`` names it)."""
    return f"prefect:deployment/{flow_name}/{deployment_name}" if deployment_name else None


def by_automation(run: Any) -> bool:
    """True for a flow run an automation created (Prefect sets ``created_by`` from the action's headers)."""
    return getattr(getattr(run, "created_by", None), "type", None) == "AUTOMATION"


def _action_filter(run: Any) -> Any:
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventRelatedFilter

    created = getattr(run, "created", None) or dt.datetime.now(dt.timezone.utc)
    return EventFilter(
        event=EventNameFilter(name=ACTION_EVENTS),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{run.id}"]),
        occurred=EventOccurredFilter(
            since=created - dt.timedelta(minutes=10), until=dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)
        ),
    )


def _triggering_event(actions: Iterable[Any]) -> uuid.UUID | None:
    for action in actions:
        for related in action.related:
            if related.role == "triggering-event":
                return uuid.UUID(related.id.rsplit(".", 1)[-1])
    return None


def _id_filter(event_id: uuid.UUID) -> Any:
    from prefect.events.filters import EventFilter, EventIDFilter, EventOccurredFilter

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)  # a CloudEvent's time may run ahead a little
    return EventFilter(id=EventIDFilter(id=[event_id]), occurred=EventOccurredFilter(until=later))


def _caused(events: Iterable[Any], target: str | None) -> Causation | None:
    """What the triggering event (one the bridge sent: a CloudEvent as its payload) causes, else None."""
    for event in events:
        payload = event.payload
        if isinstance(payload, Mapping) and payload.get("specversion") and payload.get("id"):
            return Causation.from_envelope(payload, target)
    return None


def _remember(run_id: str, found: Causation | None) -> Causation | None:
    _known[run_id] = found
    while len(_known) > _KEEP:
        _known.popitem(last=False)
    return found


async def automation_causation(client: Any, run: Any, target: str | None, wait: float = LINK_WAIT) -> Causation | None:
    """The causation of a flow run an automation started on an event the bridge sent (the module docstring),
    read with an async Prefect client; None when its trigger was no bridged event or the link stays missing."""
    key = str(run.id)
    if key in _known or not by_automation(run):
        return _known.get(key)
    deadline = time.monotonic() + wait
    while True:
        trigger = _triggering_event((await client.read_events(filter=_action_filter(run), limit=10)).events)
        if trigger is not None:
            events = (await client.read_events(filter=_id_filter(trigger), limit=1)).events
            if events:
                return _remember(key, _caused(events, target))
        if time.monotonic() >= deadline:
            log.warning("prefect: flow run %s was started by an automation, but its trigger was not found", key)
            return _remember(key, None)
        await asyncio.sleep(_POLL)


def _automation_causation_sync(run: Any, flow_name: str | None, wait: float = LINK_WAIT) -> Causation | None:
    """``automation_causation`` from inside a flow run (a sync client; the deployment's name read once)."""
    key = str(run.id)
    if key in _known or not by_automation(run):
        return _known.get(key)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(run.deployment_id).name if run.deployment_id else None
        if flow_name is None:
            flow_name = client.read_flow(run.flow_id).name
        target = deployment_target(flow_name, deployment)
        deadline = time.monotonic() + wait
        while True:
            trigger = _triggering_event(client.read_events(filter=_action_filter(run), limit=10).events)
            if trigger is not None:
                events = client.read_events(filter=_id_filter(trigger), limit=1).events
                if events:
                    return _remember(key, _caused(events, target))
            if time.monotonic() >= deadline:
                return _remember(key, None)
            time.sleep(_POLL)


def flow_run_causation() -> Causation | None:
    """Inside a flow run (or a task of one) started by the bridge — by ``run_deployment_on`` (its tag) or by an
    automation on a bridged event (Prefect's record of it) — the causation of what it emits, else None."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:  # pragma: no cover - Prefect is the extra this module belongs to
        return None
    tags: list[Any] = []
    run: Any = None
    flow_name = None
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        run, flow_name = flow_ctx.flow_run, flow_ctx.flow.name
        tags += list(run.tags or [])
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        tags += list(task_ctx.task_run.tags or [])
    if not tags and run is None:
        try:
            from prefect.runtime import flow_run as runtime_flow_run

            tags = list(runtime_flow_run.tags or [])
        except Exception:  # noqa: BLE001 - outside a run there is nothing to read
            return None
    found = causation_from_tags(tags)
    if found is None and run is not None and by_automation(run):
        try:
            found = _automation_causation_sync(run, flow_name)
        except Exception as e:  # noqa: BLE001 - no causation is better than a failed flow
            log.warning("prefect: the causation of flow run %s could not be read: %s", run.id, e)
    return found


@contextlib.contextmanager
def caused_by_flow_run() -> Iterator[Causation | None]:
    """Inside a flow run: every event emitted in the block (``databricks_nats.emit``, an MLflow hook's) carries the
    flow run's causation (``flow_run_causation``); outside one, or for a flow run nothing caused, nothing changes."""
    found = flow_run_causation()
    if found is None:
        yield None
        return
    with caused_by(found) as cause:
        yield cause
