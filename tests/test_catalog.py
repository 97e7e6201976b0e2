"""The catalogue knows the built-in types from its own import, whatever else was (not) imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from databricks_nats.errors import ConfigurationError
from databricks_nats.model import catalog
from databricks_nats.model.eventtype import EventType
from databricks_nats.model.types import BUILTIN


def _fresh(code: str) -> dict[str, object]:
    """Run ``code`` in a new interpreter (nothing of the package imported yet); it prints one JSON value."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(done.stdout))


def test_lookup_of_a_built_in_type_right_after_importing_the_catalog_alone() -> None:
    got = _fresh(
        "import json, sys\n"
        "import databricks_nats.model.catalog as catalog\n"
        "t = catalog.lookup('mlflow.run.started')\n"
        "print(json.dumps({'description': t.description, 'keys': list(t.keys),"
        " 'events_imported': 'databricks_nats.model.events' in sys.modules}))\n"
    )
    assert got == {"description": "MLflow run started", "keys": ["experiment_id", "run_id"], "events_imported": False}


def test_the_built_in_types_are_data_that_import_no_catalog() -> None:
    got = _fresh(
        "import json, sys\n"
        "import databricks_nats.model.types as types\n"
        "print(json.dumps({'count': len(types.BUILTIN), 'catalog': 'databricks_nats.model.catalog' in sys.modules}))\n"
    )
    assert got == {"count": len(BUILTIN), "catalog": False}


def test_every_built_in_type_is_catalogued_once() -> None:
    names = [t.name for t in BUILTIN]
    assert len(names) == len(set(names))
    assert {t.name for t in catalog.all_types()} >= set(names)
    assert all(catalog.lookup(t.name) is t for t in BUILTIN)


def test_a_custom_type_is_generic_and_a_bad_field_kind_is_refused() -> None:
    assert catalog.lookup("custom.widget.made").description == "custom event"
    with pytest.raises(ConfigurationError, match="unknown field kinds"):
        catalog.register(EventType("custom.widget.broken", fields={"size": "bigint"}))


def test_the_readme_type_table_names_every_built_in_type() -> None:
    """A user reads the README's table to find what to subscribe to: every built-in type is in it."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Event types", 1)[1].split("\n### ", 1)[0]
    named: set[str] = set()
    for row in table.splitlines():
        cells = re.findall(r"`([a-z_.]+)`", row.split("|")[1] if row.startswith("|") else "")
        if not cells:
            continue
        family = cells[0].rsplit(".", 1)[0]  # `a.b.first` / `second` / …: the others share its entity
        named |= {cells[0]} | {f"{family}.{action}" for action in cells[1:] if "." not in action}
    missing = sorted(t.name for t in BUILTIN if t.name not in named)
    assert not missing, f"README's event type table lacks {missing}"
