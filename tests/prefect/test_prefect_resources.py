"""How CloudEvents map onto Prefect events: one stable resource id rule per event family."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import databricks_nats
from databricks_nats.prefect import prefect_event_fields, resource_id
from databricks_nats.testing import capture


def _envelope(event_type: str, data: dict[str, Any], **kw: Any) -> dict[str, Any]:
    with capture(workspace="123", env="prod") as events:
        databricks_nats.emit(event_type, data, **kw)
    return events[0].envelope


@pytest.mark.parametrize(
    ("event_type", "data", "expected"),
    [
        (
            "mlflow.run.finished",
            {"experiment_id": "1", "run_id": "r9", "status": "FINISHED"},
            "databricks.mlflow.run.r9",
        ),
        (
            "mlflow.model.alias_set",
            {"name": "main.ml.churn", "alias": "a", "version": "1"},
            "databricks.mlflow.model.main.ml.churn",
        ),
        ("mlflow.logged_model.logged", {"experiment_id": "1", "model_id": "m-1"}, "databricks.mlflow.logged_model.m-1"),
        ("spark.stream.progress", {"query_id": "q1"}, "databricks.spark.stream.q1"),
        (
            "spark.execution.failed",
            {"app_id": "app-7", "kind": "sql", "duration_ms": 1, "jobs": 1, "stages": 1},
            "databricks.spark.app.app-7",
        ),
        ("data.table.updated", {"table": "main.features.users"}, "databricks.data.table.main.features.users"),
    ],
)
def test_each_family_has_a_stable_resource_id(event_type: str, data: dict[str, Any], expected: str) -> None:
    """Every catalogued event family maps to the documented resource id, built from its key data field."""
    assert resource_id(_envelope(event_type, data)) == expected


def test_custom_events_use_their_decoded_subject_keys() -> None:
    """A custom event type's resource id is its source, entity and subject keys (decoded, dots kept)."""
    envelope = _envelope("custom.thing.done", {"x": 1}, keys=["a.b", "c"])
    assert resource_id(envelope) == "databricks.custom.thing.a.b.c"


def test_fields_are_those_of_emit_event() -> None:
    """The mapping keeps the CloudEvent id, time and body, labels scalar data fields and names related objects."""
    envelope = _envelope("mlflow.model.version_created", {"name": "m", "version": "2", "run_id": "r1", "model_id": "x"})
    fields = prefect_event_fields(envelope)
    assert set(fields) == {"event", "resource", "related", "payload", "occurred", "id"}
    assert fields["id"] == uuid.UUID(envelope["id"])
    assert fields["payload"] == envelope
    assert fields["resource"]["databricks.data.version"] == "2"
    assert "databricks.data.context" not in fields["resource"]
    roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in fields["related"]}
    assert roles == {
        "workspace": "databricks.workspace.123",
        "run": "databricks.mlflow.run.r1",
        "logged_model": "databricks.mlflow.logged_model.x",
    }
    from prefect.events import Event

    assert Event(**fields).resource.id == "databricks.mlflow.model.m"


def test_a_resource_rule_can_override_the_id() -> None:
    """A caller's rule replaces the resource id where it returns one and keeps the built-in one elsewhere."""
    envelope = _envelope("mlflow.model.alias_set", {"name": "m", "alias": "a", "version": "1"})
    assert prefect_event_fields(envelope, lambda e: "mine.m")["resource"]["prefect.resource.id"] == "mine.m"
    assert (
        prefect_event_fields(envelope, lambda e: None)["resource"]["prefect.resource.id"] == "databricks.mlflow.model.m"
    )


def test_the_whole_event_can_be_one_flow_parameter() -> None:
    """The documented recipe: ``"{{ event }}"`` hands the flow the whole CloudEvent, ``"{{ data }}"`` its data."""
    from databricks_nats.prefect import render_parameters

    envelope = _envelope("mlflow.model.alias_set", {"name": "m", "alias": "champion", "version": "3"})

    class Received:  # what the runner hands over: the parts of a ReceivedEvent templates read
        def __init__(self, env: dict[str, Any]) -> None:
            self.envelope, self.data, self.id, self.type = env, env["data"], env["id"], env["type"]
            self.seq, self.workspace, self.env = 1, env.get("workspace"), env.get("env")

    params = render_parameters({"event": "{{ event }}", "data": "{{ data }}"}, Received(envelope))  # type: ignore[arg-type]
    assert params["event"] == envelope
    assert params["event"]["data"]["version"] == "3"
    assert params["data"] == envelope["data"]
