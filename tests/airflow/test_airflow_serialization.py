"""What Airflow stores of the trigger: serialize() round trips, through DAG serialization too, without secrets."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from airflow._shared.module_loading import import_string
from airflow.sdk import DAG, Asset, AssetWatcher
from airflow.serialization.serialized_objects import BaseSerialization, DagSerialization
from airflow.triggers.base import BaseEventTrigger

from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.airflow import NatsEventTrigger, cloudevents
from databricks_nats.integrations.airflow.queues import parse_queue_uri

KWARGS: dict[str, Any] = {
    "event_type": "mlflow.run.finished",
    "match": {"experiment_id": "42"},
    "where": [["metrics__rmse__value", ">", 0.3], ["status", "in", ["FINISHED"]]],
    "start": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    "url": "nats://nats-1:4222,nats://nats-2:4222",
    "workspace": "1234567890",
    "env": "prod",
    "settings": {"connect_timeout": 5},
}


def test_serialize_round_trip() -> None:
    """Re-instantiating from serialize() gives an equal trigger: same kwargs, same hash, same durable consumer."""
    trigger = NatsEventTrigger(**KWARGS)
    classpath, kwargs = trigger.serialize()
    json.dumps(kwargs)  # plain JSON: what the trigger table stores
    again = import_string(classpath)(**json.loads(json.dumps(kwargs)))
    assert isinstance(again, NatsEventTrigger)
    assert again.serialize() == (classpath, kwargs)
    assert BaseEventTrigger.hash(classpath, kwargs) == BaseEventTrigger.hash(*again.serialize())
    assert kwargs["start"] == "2026-01-02T03:04:05+00:00"
    assert again.durable == trigger.durable
    assert again.durable.startswith("airflow-")
    assert again.subject_filters() == ["dbx.1234567890.prod.mlflow.run.42.*.finished"]


def test_default_durable_depends_on_the_filters() -> None:
    """Triggers with different filters get different durable consumers; identical ones share one."""
    base = NatsEventTrigger(**KWARGS).durable
    assert NatsEventTrigger(**KWARGS).durable == base
    assert NatsEventTrigger(**{**KWARGS, "where": [["metrics__rmse__value", ">", 0.5]]}).durable != base
    assert NatsEventTrigger(**{**KWARGS, "env": "staging"}).durable != base
    assert NatsEventTrigger(**{**KWARGS, "durable": "mine"}).durable == "mine"
    assert NatsEventTrigger(**KWARGS, once=True).durable is None  # a sensor reads from its start time


def test_asset_watcher_survives_dag_serialization() -> None:
    """An asset watcher's trigger comes back from Airflow's DAG serialization with the kwargs it was given."""
    trigger = NatsEventTrigger(**KWARGS)
    asset = Asset(name="retrain_needed", watchers=[AssetWatcher(name="rmse_too_high", trigger=trigger)])
    with DAG("retrain", schedule=[asset]) as dag:
        pass
    data = json.loads(json.dumps(DagSerialization.to_dict(dag)))
    found = [w["trigger"] for w in _walk(data, "watchers")]
    assert len(found) == 1
    stored = found[0]
    kwargs = {k: BaseSerialization.deserialize(v) for k, v in stored["kwargs"].items()}
    assert (stored["classpath"], kwargs) == trigger.serialize()


def _walk(value: Any, key: str) -> list[Any]:
    if isinstance(value, dict):
        return [*value.get(key, []), *[x for v in value.values() for x in _walk(v, key)]]
    if isinstance(value, list):
        return [x for v in value for x in _walk(v, key)]
    return []


def test_secrets_are_refused_as_arguments() -> None:
    """A credential passed as a trigger argument is refused, since Airflow would store it in its database."""
    with pytest.raises(ConfigurationError, match="DATABRICKS_NATS_TOKEN"):
        NatsEventTrigger(event_type="mlflow.model.alias_set", settings={"token": "s3cret"})
    with pytest.raises(ValueError, match="credentials"):
        parse_queue_uri("nats://user:pw@nats:4222/mlflow.model.alias_set")


def test_bad_filters_fail_at_construction() -> None:
    """Unknown operators and non-JSON values fail when the DAG is parsed, not later in the triggerer."""
    with pytest.raises(ValueError, match="unknown operator"):
        NatsEventTrigger(event_type="mlflow.run.finished", where=[["metrics__rmse__value", "~", 1]])
    with pytest.raises(TypeError):
        NatsEventTrigger(event_type="mlflow.run.finished", match={"experiment_id": object()})


def test_cloudevents_reads_merged_asset_events() -> None:
    """cloudevents() flattens triggering_asset_events of a merged burst, in order, each id once, others skipped."""

    class AssetEvent:
        def __init__(self, extra: dict[str, Any]) -> None:
            self.extra = extra

    def ce(i: int, kind: str = "mlflow.model.alias_set") -> dict[str, Any]:
        return {"specversion": "1.0", "id": f"id-{i}", "type": f"databricks.{kind}", "data": {"v": i}}

    class Accessor(Mapping[Any, Any]):
        """Like Airflow's triggering_asset_events: keyed by assets, TypeError for any other key."""

        def __init__(self, events: dict[tuple[str], list[AssetEvent]]) -> None:
            self.events = events

        def __getitem__(self, key: Any) -> list[AssetEvent]:
            if not isinstance(key, tuple):
                raise TypeError(f"Key should be either an asset or an asset alias, not {type(key)}")
            return self.events[key]

        def __iter__(self) -> Iterator[Any]:
            return iter(self.events)

        def __len__(self) -> int:
            return len(self.events)

    merged = Accessor(
        {
            ("asset-a",): [AssetEvent({"from_trigger": True, "payload": ce(1)}), AssetEvent({"from_trigger": True})],
            ("asset-b",): [
                AssetEvent({"payload": ce(2)}),
                AssetEvent({"payload": ce(1)}),
                AssetEvent({"payload": ce(3, "x.y.z")}),
            ],
        }
    )
    assert [e["id"] for e in cloudevents(merged)] == ["id-1", "id-2", "id-3"]
    assert [e["id"] for e in cloudevents(merged, event_type="mlflow.model.alias_set")] == ["id-1", "id-2"]
    assert cloudevents({"payload": ce(7)}) == [ce(7)]
