"""Subject filters built from the publisher's grammar, so nobody hand-writes subject strings.

``subject_filter(namespace, "mlflow.model.alias_set", name="main.ml.churn")`` is
``<namespace>.mlflow.model.main%2Eml%2Echurn.alias_set``: each subject key given is encoded exactly as the
publisher encodes it, each key not given is ``*``. A type whose action is ``*`` (``"mlflow.run.*"``)
matches every action of the entity; no type at all matches the whole namespace (``>``). Wildcards appear
only where the caller leaves something out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from databricks_nats.errors import SubjectError
from databricks_nats.model import catalog, subjects

__all__ = ["key_fields", "matches", "subject_filter"]


def key_fields(event_type: str) -> tuple[str, ...]:
    """The data fields that make up the subject keys of a catalogued type (``*`` action allowed)."""
    source_entity, _, action = event_type.rpartition(".")
    for t in catalog.all_types():
        if t.name == event_type or (action == "*" and t.name.rpartition(".")[0] == source_entity):
            return t.keys
    raise SubjectError(f"no catalogued event type matches {event_type!r}")


def subject_filter(namespace: str, event_type: str | None = None, keys: Any = None, **match: Any) -> str:
    """The subject filter for ``event_type`` in ``namespace``, narrowed by the subject keys in ``match``.

    Catalogued types name their keys by data field (``name=...``, ``run_id=...``); custom types pass
    ``keys`` as a sequence with ``"*"`` for any. Fields in ``match`` that are not subject keys are ignored
    here (consumers compare them with the event's data).
    """
    if event_type is None:
        return f"{namespace}.>"
    source_entity, _, action = event_type.rpartition(".")
    if not source_entity or "." not in source_entity:
        raise SubjectError(f"event type {event_type!r} is not <source>.<entity>.<action>")
    if keys is not None:
        tokens = ["*" if k == "*" else subjects.encode(str(k)) for k in keys]
    else:
        try:
            names = key_fields(event_type)
        except SubjectError:
            raise SubjectError(f"custom event type {event_type!r}: pass keys=[...] ('*' for any)") from None
        tokens = [subjects.encode(str(match[n])) if n in match else "*" for n in names]
    return ".".join([namespace, source_entity, *tokens, action])


def matches(data: Mapping[str, Any], match: Mapping[str, Any]) -> bool:
    """True when every field in ``match`` equals the event data's (nested fields as ``a__b``)."""
    for name, want in match.items():
        have: Any = data
        for part in name.split("__"):
            have = have.get(part) if isinstance(have, Mapping) else None
        if have != want and str(have) != str(want):
            return False
    return True
