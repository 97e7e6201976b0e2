"""Run a Prefect deployment for each matching event, with parameters taken from the event.

    from databricks_nats.prefect import run_deployment_on

    run_deployment_on(
        "deploy-model/prod",                      # "<flow name>/<deployment name>" or a deployment id
        "mlflow.model.alias_set",
        match={"name": "main.ml.churn", "alias": "champion"},
        parameters={"model": "name", "version": "version", "source": "{{ event.source }}"},
    )

This needs no automation on the Prefect side: the events are read with a durable JetStream consumer and
each one creates a flow run with ``prefect.deployments.run_deployment`` (not waiting for it to finish
unless ``wait`` is given), and is acknowledged once the flow run exists. The flow run's idempotency key is
``databricks-nats:<deployment>:<event id>``, so an event delivered again (after a crash between the run's
creation and the acknowledgement) returns the same flow run instead of starting a second one.

A parameter is given as

* a data field name (``"version"``; nested fields as ``"metrics__accuracy"``, as in ``match``),
* a template: ``"{{ data.version }}"`` alone gives the value with its JSON type; inside a longer string
  (``"v{{ data.version }} of {{ data.name }}"``) each placeholder is replaced by its text. Names usable
  in a placeholder: ``data``, ``event`` (the whole CloudEvent), ``id``, ``type``, ``subject``, ``time``,
  ``seq``, ``workspace`` and ``env``, with dots for nested fields,
* a callable taking the ``ReceivedEvent``, or any other value (a number, a list...), passed unchanged.

Causation and loops: the flow run gets a tag with the causation of what it will cause
(``Causation.from_envelope(event, "prefect:deployment/<deployment>")``, see ``lineage``), so its state
changes (the forwarder) and what its ``publish`` task emits carry the triggering event's correlation id, one
hop more. An event whose chain is at the hop limit (``hop_limit``, default 8) or already went through this
deployment starts no flow run: it is acknowledged, counted (``result.refused``), logged and announced once per
chain as ``system.loop.detected`` (``LoopGuard``).

A field the event does not have is an error (``ParameterError``): the runner stops and leaves the event
unacknowledged, so it is delivered again once the mapping is fixed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from databricks_nats.consumer import Match, ReceivedEvent, Start, subscribe
from databricks_nats.errors import DatabricksNatsError
from databricks_nats.integrations.prefect.bridging import BridgeResult, Stop, block_settings, pump
from databricks_nats.integrations.prefect.lineage import causation_tag
from databricks_nats.loopguard import LoopGuard
from databricks_nats.model.causation import Causation
from databricks_nats.transport.loop import blocking

__all__ = ["ParameterError", "event_context", "render_parameters", "run_deployment_on", "run_deployment_on_async"]

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")
_MISSING = object()

Parameter = Any  # a data field name, a template, a callable taking the ReceivedEvent, or a value


class ParameterError(DatabricksNatsError, KeyError):
    """A parameter mapping names a field that the event does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def event_context(event: ReceivedEvent) -> dict[str, Any]:
    """The names a parameter template can use."""
    envelope = event.envelope
    return {
        "data": event.data,
        "event": envelope,
        "id": event.id,
        "type": event.type,
        "subject": envelope.get("subject", getattr(event, "subject", None)),
        "time": envelope.get("time"),
        "seq": event.seq,
        "workspace": event.workspace,
        "env": event.env,
    }


def _lookup(root: Any, parts: list[str]) -> Any:
    value = root
    for part in parts:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _render(name: str, spec: Parameter, event: ReceivedEvent, context: dict[str, Any]) -> Any:
    if callable(spec):
        return spec(event)
    if not isinstance(spec, str):
        return spec

    def find(path: str, parts: list[str], root: Any) -> Any:
        value = _lookup(root, parts)
        if value is _MISSING:
            raise ParameterError(
                f"parameter {name!r}: event {event.type} {event.id} has no {path!r} "
                f"(data fields: {', '.join(sorted(event.data)) or 'none'})"
            )
        return value

    if "{{" not in spec:
        return find(f"data.{spec}", spec.split("__"), event.data)
    whole = _PLACEHOLDER.fullmatch(spec.strip())
    if whole:
        return find(whole.group(1), whole.group(1).split("."), context)
    return _PLACEHOLDER.sub(lambda m: str(find(m.group(1), m.group(1).split("."), context)), spec)


def render_parameters(parameters: Mapping[str, Parameter] | None, event: ReceivedEvent) -> dict[str, Any]:
    """The flow parameters for one event (see the module documentation for the forms of a parameter)."""
    context = event_context(event)
    return {name: _render(name, spec, event, context) for name, spec in (parameters or {}).items()}


def _durable_for(deployment: str) -> str:
    return "prefect-run-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(deployment)).strip("-")


async def run_deployment_on_async(
    deployment: str,
    event_type: str | None = None,
    *,
    parameters: Mapping[str, Parameter] | None = None,
    match: Match = None,
    durable: str | None = None,
    start: Start = "new",
    wait: float = 0,
    tags: list[str] | None = None,
    flow_run_name: str | None = None,
    max_events: int | None = None,
    idle_timeout: float | None = None,
    stop: Stop = None,
    subjects: list[str] | None = None,
    block: str | None = None,
    **settings: Any,
) -> BridgeResult:
    """Create a flow run of ``deployment`` for every event of ``event_type`` whose data matches ``match``.

    ``parameters`` maps each flow parameter to a data field, a template or a callable (module docs);
    ``durable`` defaults to ``prefect-run-<deployment>``; ``wait`` is how long to wait for each flow run
    to finish before taking the next event (0: not at all). The ids of the flow runs created are in the
    result's ``flow_runs``. Stops like ``bridge``: after ``max_events``, ``idle_timeout`` seconds without
    an event, or when ``stop`` is set. ``block`` names a saved ``NatsSettings`` block. Events that would
    continue a loop start nothing (module docs); ``result.refused`` counts them. ``run_deployment_on`` is the
    same, blocking.
    """
    from prefect.deployments import arun_deployment

    from databricks_nats.client import Client

    settings = await block_settings(block, settings)
    name_template = flow_run_name
    target = f"prefect:deployment/{deployment}"

    async def run(event: ReceivedEvent) -> Any:
        params = render_parameters(parameters, event)
        run_name = None
        if name_template is not None:
            run_name = str(_render("flow_run_name", name_template, event, event_context(event)))
        flow_run = await arun_deployment(
            deployment,
            parameters=params,
            timeout=wait,
            idempotency_key=f"databricks-nats:{deployment}:{event.id}",
            as_subflow=False,
            tags=[*(tags or []), causation_tag(Causation.from_envelope(event.envelope, target))],
            flow_run_name=run_name,
        )
        return flow_run.id

    sub = subscribe(
        event_type,
        match=match,
        durable=durable or _durable_for(deployment),
        start=start,
        subjects=subjects,
        **settings,
    )
    announcer = Client(sub.settings)
    # The subscription refuses loops under this deployment's name (hop limit, or back at this deployment).
    sub.guard = guard = LoopGuard(target, sub.settings.hop_limit, client=announcer)
    result = BridgeResult()
    try:
        return await pump(sub, run, result, max_events=max_events, idle_timeout=idle_timeout, stop=stop)
    finally:
        result.refused = guard.refused
        await asyncio.to_thread(announcer.close)


run_deployment_on = blocking(run_deployment_on_async, "run_deployment_on")
