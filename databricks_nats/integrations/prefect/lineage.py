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
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from databricks_nats.model.causation import Causation

__all__ = ["TAG_PREFIX", "causation_from_tags", "causation_tag", "flow_run_causation"]

TAG_PREFIX = "databricks-nats.causation:"


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


def flow_run_causation() -> Causation | None:
    """Inside a flow run (or a task of one) started by the bridge: the causation of what it emits, else None."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:  # pragma: no cover - Prefect is the extra this module belongs to
        return None
    tags: list[Any] = []
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        tags += list(flow_ctx.flow_run.tags or [])
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        tags += list(task_ctx.task_run.tags or [])
    if not tags:
        try:
            from prefect.runtime import flow_run as runtime_flow_run

            tags = list(runtime_flow_run.tags or [])
        except Exception:  # noqa: BLE001 - outside a run there is nothing to read
            return None
    return causation_from_tags(tags)
