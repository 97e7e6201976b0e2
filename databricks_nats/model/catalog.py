"""The catalogue of event types: subject keys, main pointer and JSON Schema of each.

A type name is ``<source>.<entity>.<action>`` (the entity may span several tokens). Its subject is
``<namespace>.<source>.<entity>.<key…>.<action>`` where the keys are the listed data fields, encoded by
``subjects.encode``. Types outside the catalogue (custom events) are accepted when their name follows
the grammar; their keys come from the caller and their schema is the generic one.

The built-in types are data (``model.types.BUILTIN``), registered here when this module is imported, so a
lookup answers the same whatever else was imported.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from databricks_nats.errors import ConfigurationError, SubjectError
from databricks_nats.model.eventtype import FIELD_KINDS, EventType
from databricks_nats.model.subjects import validate_name
from databricks_nats.model.types import BUILTIN

__all__ = ["EventType", "all_types", "envelope_schema", "lookup", "register"]

_REGISTRY: dict[str, EventType] = {}


def register(etype: EventType) -> EventType:
    """Add a type to the catalogue (validating its name and fields) and return it."""
    parts = etype.name.split(".")
    if len(parts) < 3:
        raise SubjectError(f"event type {etype.name!r} must be <source>.<entity>.<action>")
    for part in parts:
        validate_name("event type token", part)
    unknown = {k for k in etype.fields.values() if k not in FIELD_KINDS}
    if unknown:
        raise ConfigurationError("fields", f"event type {etype.name!r} uses unknown field kinds {sorted(unknown)}")
    _REGISTRY[etype.name] = etype
    lookup.cache_clear()
    return etype


@lru_cache(maxsize=1024)
def lookup(name: str) -> EventType:
    """Return the catalogued type, or a generic one for a well-formed custom type name."""
    found = _REGISTRY.get(name)
    if found is not None:
        return found
    parts = name.split(".") if isinstance(name, str) else []
    if len(parts) < 3:
        raise SubjectError(f"event type {name!r} must be <source>.<entity>.<action>")
    for part in parts:
        validate_name("event type token", part)
    return EventType(name, description="custom event")


def all_types() -> list[EventType]:
    """Every catalogued type, sorted by name."""
    return sorted(_REGISTRY.values(), key=lambda t: t.name)


def envelope_schema() -> dict[str, Any]:
    """The JSON Schema of the CloudEvents envelope every event is sent in."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:databricks-nats:schema:envelope:1",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {
                "type": "string",
                "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[57][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
            },
            "source": {"type": "string", "minLength": 1},
            "type": {"type": "string", "pattern": "^databricks\\.[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+){2,}$"},
            "subject": {"type": "string", "pattern": "^[^.*> \\t\\r\\n]+(\\.[^.*> \\t\\r\\n]+)*$"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "dataschema": {"type": "string", "format": "uri"},
            "dataref": {"type": "string"},
            "traceparent": {"type": "string", "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"},
            "workspace": {"type": "string"},
            "env": {"type": "string"},
            "causationid": {"type": "string", "minLength": 1},
            "correlationid": {"type": "string", "minLength": 1},
            "hop": {"type": "integer", "minimum": 1},
            "via": {"type": "string"},
            "data": {"type": "object"},
        },
        "dependentRequired": {"causationid": ["correlationid", "hop"]},
        "additionalProperties": False,
    }


for _builtin in BUILTIN:
    register(_builtin)
