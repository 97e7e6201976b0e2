"""How a CloudEvent from NATS becomes a Prefect event: its name, resource, related resources and payload.

The Prefect event's **name** is the CloudEvent type (``databricks.mlflow.model.alias_set``), its **id** the
CloudEvent id (so a redelivered message is the same Prefect event: the server stores it once and its
triggers evaluate it once), ``occurred`` the CloudEvent time and its **payload** the whole CloudEvent
(``{{ event.payload.data.version }}`` in a trigger's parameter template).

The **resource id** is stable, one rule per event family:

* ``mlflow.run.*`` → ``databricks.mlflow.run.<run_id>`` (name: ``run_name``, else the run id)
* ``mlflow.model.*`` → ``databricks.mlflow.model.<name>`` (the registered model's full name)
* ``mlflow.logged_model.*`` → ``databricks.mlflow.logged_model.<model_id>`` (name: ``name``)
* ``spark.stream.*`` → ``databricks.spark.stream.<query_id>`` (name: ``name``)
* ``spark.execution.*`` → ``databricks.spark.app.<app_id>``
* ``data.table.*`` → ``databricks.data.table.<table>``
* any other type → ``databricks.<source>.<entity>[.<subject keys, decoded>]``

Names keep their dots (``databricks.mlflow.model.main.ml.churn``); match a family with a trailing
wildcard (``databricks.mlflow.model.*``). The resource also carries ``databricks.workspace``,
``databricks.env``, ``databricks.subject`` and one ``databricks.data.<field>`` label per top-level
scalar field of the event's data (``databricks.data.alias``, ``databricks.data.version``,
``databricks.data.status``…), so ``DeploymentEventTrigger(match={...})`` can select on them.

**Related** resources (``match_related``): the workspace (role ``workspace``,
``databricks.workspace.<workspace>``), and where the data names them and they are not the primary
resource, the MLflow run (role ``run``, from ``run_id`` or ``mlflow_run_id``), experiment (role
``experiment``) and logged model (role ``logged_model``).

This module does not import Prefect: ``prefect_event_fields`` returns plain dicts, the keyword
arguments of ``prefect.events.emit_event``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from databricks_nats.model import subjects

__all__ = ["FAMILIES", "ResourceRule", "prefect_event_fields", "related_resources", "resource_id"]

PREFIX = "databricks"
MAX_LABEL_CHARS = 1000

# event family (``<source>.<entity>``) -> (resource kind, data field holding the id, field holding a name)
FAMILIES: dict[str, tuple[str, str, str | None]] = {
    "mlflow.run": ("databricks.mlflow.run", "run_id", "run_name"),
    "mlflow.model": ("databricks.mlflow.model", "name", "name"),
    "mlflow.logged_model": ("databricks.mlflow.logged_model", "model_id", "name"),
    "spark.stream": ("databricks.spark.stream", "query_id", "name"),
    "spark.execution": ("databricks.spark.app", "app_id", "app_id"),
    "data.table": ("databricks.data.table", "table", "table"),
}

# data field -> (resource kind, role) of the related resources named by an event's data
_RELATED: tuple[tuple[str, str, str], ...] = (
    ("run_id", "databricks.mlflow.run", "run"),
    ("mlflow_run_id", "databricks.mlflow.run", "run"),
    ("experiment_id", "databricks.mlflow.experiment", "experiment"),
    ("model_id", "databricks.mlflow.logged_model", "logged_model"),
)

ResourceRule = Callable[[Mapping[str, Any]], str | None]


def _family(envelope: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(source, entity, action)`` of the envelope's type (``databricks.`` removed)."""
    name = str(envelope.get("type", "")).removeprefix(f"{PREFIX}.")
    source, _, rest = name.partition(".")
    entity, _, action = rest.rpartition(".")
    return source, entity, action


def _data(envelope: Mapping[str, Any]) -> Mapping[str, Any]:
    data = envelope.get("data")
    return data if isinstance(data, Mapping) else {}


def _subject_keys(envelope: Mapping[str, Any]) -> list[str]:
    """The decoded subject keys of an event: the tokens between ``<source>.<entity>`` and the action."""
    source, entity, action = _family(envelope)
    subject = str(envelope.get("subject", ""))
    head = ".".join(t for t in (envelope.get("workspace"), envelope.get("env"), source, entity) if t)
    start = subject.find(f".{head}.") if head else -1
    if start < 0 or not subject.endswith(f".{action}"):
        return []
    middle = subject[start + len(head) + 2 : len(subject) - len(action) - 1]
    return [subjects.decode(t) for t in middle.split(".") if t] if middle else []


def resource_id(envelope: Mapping[str, Any]) -> str:
    """The stable Prefect resource id of the thing an event is about (see the table in this module)."""
    source, entity, _ = _family(envelope)
    data = _data(envelope)
    family = FAMILIES.get(f"{source}.{entity}")
    if family is not None and data.get(family[1]) not in (None, ""):
        return f"{family[0]}.{data[family[1]]}"
    keys = _subject_keys(envelope)
    return ".".join([PREFIX, source or "event", *(entity.split(".") if entity else []), *keys])


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        text = str(value)
        return text if len(text) <= MAX_LABEL_CHARS else None
    return None


def related_resources(envelope: Mapping[str, Any], primary: str) -> list[dict[str, str]]:
    """The workspace and the MLflow objects an event's data names, as Prefect related resources."""
    data = _data(envelope)
    related: list[dict[str, str]] = []
    seen = {primary}
    workspace = envelope.get("workspace")
    if workspace:
        related.append(
            {
                "prefect.resource.id": f"{PREFIX}.workspace.{workspace}",
                "prefect.resource.role": "workspace",
                "prefect.resource.name": str(workspace),
                "databricks.env": str(envelope.get("env") or ""),
            }
        )
    for field, kind, role in _RELATED:
        value = _scalar(data.get(field))
        rid = f"{kind}.{value}"
        if value and rid not in seen:
            seen.add(rid)
            related.append({"prefect.resource.id": rid, "prefect.resource.role": role})
    return related


def _resource(envelope: Mapping[str, Any], rid: str) -> dict[str, str]:
    source, entity, _ = _family(envelope)
    data = _data(envelope)
    family = FAMILIES.get(f"{source}.{entity}")
    name = None
    if family is not None:
        name = _scalar(data.get(family[2])) if family[2] else None
        name = name or _scalar(data.get(family[1]))
    resource = {"prefect.resource.id": rid, "prefect.resource.name": name or rid.removeprefix(f"{PREFIX}.")}
    for label in ("workspace", "env", "subject"):
        if envelope.get(label):
            resource[f"{PREFIX}.{label}"] = str(envelope[label])
    for field, value in data.items():
        text = _scalar(value)
        if text is not None and field != "context":
            resource[f"{PREFIX}.data.{field}"] = text
    return resource


def _event_id(envelope: Mapping[str, Any]) -> uuid.UUID:
    """The CloudEvent id as a UUID (ours are UUIDv7); any other id maps to a fixed UUIDv5 of it."""
    raw = str(envelope.get("id", ""))
    try:
        return uuid.UUID(raw)
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"urn:databricks-nats:event:{raw}")


def prefect_event_fields(envelope: Mapping[str, Any], rule: ResourceRule | None = None) -> dict[str, Any]:
    """The keyword arguments of ``prefect.events.emit_event`` (and of ``prefect.events.Event``) for a CloudEvent.

    ``rule`` may return another resource id for an event (``None`` keeps the built-in one).
    """
    import datetime as dt

    rid = (rule(envelope) if rule is not None else None) or resource_id(envelope)
    stamp = str(envelope.get("time") or "").replace("Z", "+00:00")
    try:
        occurred = dt.datetime.fromisoformat(stamp)
    except ValueError:
        occurred = dt.datetime.now(dt.timezone.utc)
    return {
        "event": str(envelope.get("type") or f"{PREFIX}.event"),
        "resource": _resource(envelope, rid),
        "related": related_resources(envelope, rid),
        "payload": dict(envelope),
        "occurred": occurred if occurred.tzinfo else occurred.replace(tzinfo=dt.timezone.utc),
        "id": _event_id(envelope),
    }
