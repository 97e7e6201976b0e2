"""Reading CloudEvents back out of what Airflow hands a task (no Airflow import here).

A NATS trigger's ``TriggerEvent`` payload *is* the CloudEvent as it was published. Airflow stores it in the
asset event's ``extra["payload"]`` (event-driven DAGs) or passes it to the sensor, which pushes it to XCom.
Airflow merges bursts: one asset-triggered DAG run may carry several asset events, so iterate them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["cloudevents", "is_cloudevent"]


def is_cloudevent(value: Any) -> bool:
    """True for a structured CloudEvents 1.0 envelope (a dict with ``specversion``, ``id`` and ``type``)."""
    return isinstance(value, dict) and "specversion" in value and "id" in value and "type" in value


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    # Only plain dicts are probed by key: Airflow's triggering_asset_events is a Mapping keyed by assets
    # that raises TypeError for any other key, so every other Mapping is walked through its values().
    if value is None or isinstance(value, (str, bytes)):
        return
    if is_cloudevent(value):
        yield dict(value)
        return
    extra = value.get("extra") if isinstance(value, dict) else getattr(value, "extra", None)
    if isinstance(extra, Mapping):  # an asset event (object or dict form)
        yield from _walk(extra.get("payload"))
        return
    if isinstance(value, dict) and "payload" in value:  # a serialised TriggerEvent
        yield from _walk(value["payload"])
        return
    payload = getattr(value, "payload", None)
    if payload is not None:  # a TriggerEvent
        yield from _walk(payload)
        return
    values = getattr(value, "values", None)
    if callable(values):  # triggering_asset_events: asset -> [events]
        for item in values():
            yield from _walk(item)
        return
    if isinstance(value, Iterable):
        for item in value:
            yield from _walk(item)


def cloudevents(source: Any, *, event_type: str | None = None) -> list[dict[str, Any]]:
    """The CloudEvents in ``source``, in order, each once (repeats by ``id`` dropped).

    ``source`` is ``triggering_asset_events`` (every asset, every merged event), a list of asset events,
    one asset event, a ``TriggerEvent`` or its payload, or a CloudEvent. ``event_type`` keeps one type
    (with or without the ``databricks.`` prefix). Asset events that did not come from a NATS trigger are
    skipped.
    """
    wanted = None if event_type is None else event_type.removeprefix("databricks.")
    seen: set[str] = set()
    out = []
    for event in _walk(source):
        if event["id"] in seen:
            continue
        if wanted is not None and str(event["type"]).removeprefix("databricks.") != wanted:
            continue
        seen.add(event["id"])
        out.append(event)
    return out
