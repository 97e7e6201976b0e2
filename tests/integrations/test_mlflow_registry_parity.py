"""Registry parity with MLflow's webhooks, and more: every change to a registered model is an mlflow.model.* event.

Real MLflow on a sqlite registry. Each event is checked on its subject, against its schema, and for the fields
that identify the change (``facts.IDENTITY``: the webhook receiver derives the same id from MLflow's payloads).
"""

from __future__ import annotations

import sqlite3

import pytest
from mlflow import MlflowClient

from databricks_nats.integrations.mlflow import facts
from tests.webhooks.shared import assert_same_ids

_SOURCE = "mlflow-artifacts:/0/models/m-1/artifacts"  # a version's source: any URI the registry accepts


def _model_events(events):
    return [e for e in events if e.type.startswith("mlflow.model.")]


def _check(events, subject_of, assert_valid_event, name_token):
    for e in events:
        assert_valid_event(e.envelope)
        assert e.subject == subject_of("model", name_token, e.type.rsplit(".", 1)[1])
        identity = facts.IDENTITY.get(e.type, ())
        assert all(isinstance(e.data[f], str) for f in identity), (e.type, e.data)
        if identity:  # a change two publishers may announce is stored once: its id is derived from its identity
            assert e.envelope["id"] == facts.fact_id(e.type, e.data)


def test_every_registry_change_is_a_model_event_with_its_identifying_fields(
    tracking, record, subject_of, assert_valid_event
):
    """Model tags, descriptions, versions (with status), version tags, aliases, stages, deletes: one event each."""
    events = record()
    client = MlflowClient()
    client.create_registered_model("churn", tags={"team": "growth"}, description="first words")
    client.set_registered_model_tag("churn", "owner", "ana")
    client.delete_registered_model_tag("churn", "owner")
    client.update_registered_model("churn", description="A private roadmap note")
    mv = client.create_model_version("churn", _SOURCE, run_id=None)
    client.update_model_version("churn", mv.version, description="Version notes, never published")
    client.set_model_version_tag("churn", mv.version, "validated", "yes")
    client.delete_model_version_tag("churn", mv.version, "validated")
    client.set_registered_model_alias("churn", "production", mv.version)
    client.delete_registered_model_alias("churn", "production")
    with pytest.warns(FutureWarning):
        client.transition_model_version_stage("churn", mv.version, "Staging")
    client.delete_model_version("churn", mv.version)

    model_events = _model_events(events)
    assert [e.type.removeprefix("mlflow.model.") for e in model_events] == [
        "registered",
        "tag_set",
        "tag_deleted",
        "description_updated",
        "version_created",
        "description_updated",
        "version_tag_set",
        "version_tag_deleted",
        "alias_set",
        "alias_deleted",
        "stage_transitioned",
        "version_deleted",
    ]
    _check(model_events, subject_of, assert_valid_event, "churn")
    data = [e.data for e in model_events]
    assert all(d["name"] == "churn" and d["is_unity_catalog"] is False for d in data)
    assert (data[1]["key"], data[1]["value"], data[1]["model_uri"]) == ("owner", "ana", "models:/churn")
    assert (data[2]["key"], "value" in data[2]) == ("owner", False)
    assert "version" not in data[3]
    assert data[3]["model_uri"] == "models:/churn"
    created = data[4]
    assert (created["version"], created["status"], created["source"]) == ("1", "READY", _SOURCE)
    assert created["model_uri"] == "models:/churn/1"
    assert data[5]["version"] == "1"
    assert data[5]["model_uri"] == "models:/churn/1"
    assert (data[6]["version"], data[6]["key"], data[6]["value"]) == ("1", "validated", "yes")
    assert (data[7]["version"], data[7]["key"]) == ("1", "validated")
    assert (data[8]["alias"], data[8]["version"], data[8]["model_uri"]) == (
        "production",
        "1",
        "models:/churn@production",
    )
    assert data[9]["alias"] == "production"
    assert (data[10]["version"], data[10]["stage"]) == ("1", "Staging")
    assert data[11]["version"] == "1"
    payloads = b"".join(e.payload for e in events)
    assert b"roadmap" not in payloads
    assert b"never published" not in payloads
    assert b"first words" not in payloads


def test_rename_announces_the_new_name_and_the_previous_one(tracking, record, subject_of, assert_valid_event):
    """A rename is announced under the new name (the model's subject from now on) with the name it had."""
    client = MlflowClient()
    client.create_registered_model("churn-old")
    events = record()
    client.rename_registered_model("churn-old", "churn-new")
    client.set_registered_model_tag("churn-new", "owner", "ana")
    client.delete_registered_model("churn-new")

    assert events.types() == ["mlflow.model.renamed", "mlflow.model.tag_set", "mlflow.model.deleted"]
    renamed = events[0]
    _check(events, subject_of, assert_valid_event, "churn-new")
    assert (renamed.data["name"], renamed.data["previous_name"]) == ("churn-new", "churn-old")
    assert renamed.data["model_uri"] == "models:/churn-new"


def test_a_version_whose_registration_finishes_later_announces_its_status_change(
    tracking, record, subject_of, assert_valid_event
):
    """PENDING_REGISTRATION then READY, as the caller's own get_model_version results show: one status event.

    A sqlite registry registers at once; the registration still running on the server (a Databricks registry,
    a copy between registries) is the row's status, set here as such a server would.
    """
    client = MlflowClient()
    client.create_registered_model("slow")
    mv = client.create_model_version("slow", _SOURCE)
    db = tracking.uri.removeprefix("sqlite:///")

    def registration(status: str) -> None:
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE model_versions SET status = ? WHERE name = 'slow'", (status,))

    registration("PENDING_REGISTRATION")
    events = record()
    assert client.get_model_version("slow", mv.version).status == "PENDING_REGISTRATION"
    assert client.get_model_version("slow", mv.version).status == "PENDING_REGISTRATION"  # no change: no event
    assert events.types() == []
    registration("READY")
    assert client.get_model_version("slow", mv.version).status == "READY"
    assert client.get_model_version("slow", mv.version).status == "READY"  # settled: said once

    assert events.types() == ["mlflow.model.version_status_changed"]
    _check(events, subject_of, assert_valid_event, "slow")
    changed = events[0].data
    assert (changed["version"], changed["status"], changed["previous_status"]) == ("1", "READY", "PENDING_REGISTRATION")
    assert changed["model_uri"] == "models:/slow/1"


def test_a_failed_registration_seen_through_an_alias_is_announced(tracking, record, subject_of, assert_valid_event):
    """A get_model_version_by_alias result counts too: PENDING_REGISTRATION -> FAILED_REGISTRATION."""
    client = MlflowClient()
    client.create_registered_model("flaky")
    mv = client.create_model_version("flaky", _SOURCE)
    client.set_registered_model_alias("flaky", "candidate", mv.version)
    with sqlite3.connect(tracking.uri.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE model_versions SET status = 'PENDING_REGISTRATION' WHERE name = 'flaky'")
    events = record()
    client.get_model_version_by_alias("flaky", "candidate")
    with sqlite3.connect(tracking.uri.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE model_versions SET status = 'FAILED_REGISTRATION' WHERE name = 'flaky'")
    client.get_model_version_by_alias("flaky", "candidate")

    assert events.types() == ["mlflow.model.version_status_changed"]
    _check(events, subject_of, assert_valid_event, "flaky")
    assert (events[0].data["status"], events[0].data["previous_status"]) == (
        "FAILED_REGISTRATION",
        "PENDING_REGISTRATION",
    )


def test_model_tags_follow_the_deny_list(tracking, record):
    """A denied key (tokens, secrets) is never published for a model or a version tag, set or deleted."""
    client = MlflowClient()
    client.create_registered_model("guarded")
    mv = client.create_model_version("guarded", _SOURCE)
    events = record(deny_keys=("*token*",))
    client.set_registered_model_tag("guarded", "api_token", "tok-model-secret")
    client.delete_registered_model_tag("guarded", "api_token")
    client.set_model_version_tag("guarded", mv.version, "api_token", "tok-version-secret")
    client.delete_model_version_tag("guarded", mv.version, "api_token")
    client.set_registered_model_tag("guarded", "owner", "ana")

    assert [(e.type, e.data["key"]) for e in events] == [("mlflow.model.tag_set", "owner")]
    assert b"tok-" not in b"".join(e.payload for e in events)


def test_registry_reads_publish_nothing(tracking, record):
    """Reading the registry (what the hook learns prompts and statuses from) announces nothing."""
    client = MlflowClient()
    client.create_registered_model("read-only")
    mv = client.create_model_version("read-only", _SOURCE)
    client.set_registered_model_alias("read-only", "champion", mv.version)
    events = record()
    client.get_registered_model("read-only")
    client.get_model_version("read-only", mv.version)
    client.get_model_version_by_alias("read-only", "champion")
    client.search_registered_models()
    assert list(events) == []


def test_the_hook_and_the_webhook_receiver_give_each_model_change_one_id(tracking, record):
    """What MLflow's server sends as a webhook for a change (its request's fields, as the server builds the payload)
    gets the id the hook gave the same change: JetStream stores a change both announce once."""
    events = record()
    client = MlflowClient()
    client.create_registered_model("churn-both", tags={"team": "growth"})
    client.create_model_version("churn-both", _SOURCE)
    client.set_model_version_tag("churn-both", 1, "validated", "yes")
    client.delete_model_version_tag("churn-both", 1, "validated")
    client.set_registered_model_alias("churn-both", "production", 1)
    client.delete_registered_model_alias("churn-both", "production")
    webhooks = [  # (entity.action, payload) in the order of the calls above
        ("registered_model.created", {"name": "churn-both", "tags": {"team": "growth"}, "description": None}),
        (
            "model_version.created",
            {"name": "churn-both", "version": "1", "source": _SOURCE, "run_id": None, "tags": {}, "description": None},
        ),
        ("model_version_tag.set", {"name": "churn-both", "version": "1", "key": "validated", "value": "yes"}),
        ("model_version_tag.deleted", {"name": "churn-both", "version": "1", "key": "validated"}),
        ("model_version_alias.created", {"name": "churn-both", "alias": "production", "version": "1"}),
        ("model_version_alias.deleted", {"name": "churn-both", "alias": "production"}),
    ]

    assert_same_ids(events, webhooks)
