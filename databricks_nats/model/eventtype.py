"""``EventType``: one kind of event — its subject keys, main pointer and data fields (plain data).

The field kinds (``FIELD_KINDS``) map each declared data field onto its JSON Schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FIELD_KINDS", "EventType"]

_NON_FINITE = {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}
FIELD_KINDS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "string?": {"type": ["string", "null"]},
    "integer": {"type": "integer"},
    "integer?": {"type": ["integer", "null"]},
    "number": {"anyOf": [{"type": "number"}, _NON_FINITE]},
    "number?": {"anyOf": [{"type": "number"}, _NON_FINITE, {"type": "null"}]},
    "boolean": {"type": "boolean"},
    "object": {"type": "object"},
    "object?": {"type": ["object", "null"]},
    "array": {"type": "array"},
    "metrics": {
        "type": "object",
        "additionalProperties": {"anyOf": [{"type": "number"}, _NON_FINITE, {"type": "object"}]},
    },
}


@dataclass(frozen=True)
class EventType:
    """One kind of event: where it goes (subject keys), what it points at, and its data fields."""

    name: str
    keys: tuple[str, ...] = ()
    dataref: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    description: str = ""

    @property
    def source(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def action(self) -> str:
        return self.name.rsplit(".", 1)[1]

    @property
    def entity(self) -> str:
        return self.name.split(".", 1)[1].rsplit(".", 1)[0]

    @property
    def protected(self) -> frozenset[str]:
        """Top-level data fields trimmed only as a last resort: the keys and the pointer."""
        return frozenset(self.keys) | ({self.dataref} if self.dataref else set())

    def schema(self) -> dict[str, Any]:
        """The JSON Schema (2020-12) of this type's ``data``."""
        props: dict[str, Any] = {name: dict(FIELD_KINDS[kind]) for name, kind in self.fields.items()}
        props["context"] = {"type": "object", "additionalProperties": {"type": ["string", "integer", "null"]}}
        props["truncated"] = {"type": "boolean"}
        props["truncated_fields"] = {"type": "object", "additionalProperties": {"type": "integer"}}
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:databricks-nats:schema:{self.name}:1",
            "title": self.name,
            "description": self.description,
            "type": "object",
            "properties": props,
            "required": list(self.required or self.keys),
            "additionalProperties": True,
        }
