"""The prompt registry (MLflow 3 ``mlflow.genai``; 2.21's ``mlflow.register_prompt``): prompt changes are
mlflow.prompt.* events, never model events.

In OSS MLflow a prompt is a registered model tagged ``mlflow.prompt.is_prompt``: without care, registering a
prompt and pointing its ``production`` alias at a version looks like a model going to production. Real MLflow on
a sqlite registry; every event is checked on its subject, against its schema and for the fields that identify it
(``facts.IDENTITY``: the webhook receiver derives the same id from MLflow's own prompt webhooks).
"""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from databricks_nats.integrations.mlflow import facts
from databricks_nats.integrations.mlflow.urls import NO_UI
from tests.webhooks.shared import assert_same_ids

genai = pytest.mark.skipif(
    int(mlflow.__version__.split(".")[0]) < 3,
    reason=f"the mlflow.genai prompt registry needs MLflow 3 (installed: MLflow {mlflow.__version__})",
)

_TEMPLATE = "Answer {{question}} as the TEMPLATE-SECRET assistant would."


def _check(events, subject_of, assert_valid_event, name_token: str = "qa-bot") -> None:  # noqa: S107 - a subject token
    for e in events:
        assert_valid_event(e.envelope)
        assert e.type.startswith("mlflow.prompt.")
        assert e.subject == subject_of("prompt", name_token, e.type.rsplit(".", 1)[1])
        identity = facts.IDENTITY[e.type]
        assert all(isinstance(e.data[f], str) for f in identity), (e.type, e.data)
        assert e.envelope["id"] == facts.fact_id(e.type, e.data)  # stored once when a webhook announces it too


def _no_template(events):
    payloads = b"".join(e.payload for e in events)
    assert b"TEMPLATE-SECRET" not in payloads
    assert b"question" not in payloads


@genai
def test_prompt_lifecycle_publishes_prompt_events_with_prompt_uris(tracking, record, subject_of, assert_valid_event):
    """Register, a second version, alias production set and deleted, tags set and deleted, deletes: prompt events."""
    events = record()
    client = MlflowClient()
    first = mlflow.genai.register_prompt("qa-bot", _TEMPLATE, commit_message="first", tags={"team": "search"})
    second = mlflow.genai.register_prompt("qa-bot", _TEMPLATE + " v2")
    mlflow.genai.set_prompt_alias("qa-bot", "production", first.version)
    assert mlflow.genai.load_prompt("prompts:/qa-bot@production").version == first.version  # a read: no event
    mlflow.genai.delete_prompt_alias("qa-bot", "production")
    mlflow.genai.set_prompt_tag("qa-bot", "owner", "ana")
    client.delete_prompt_tag("qa-bot", "owner")
    mlflow.genai.set_prompt_version_tag("qa-bot", second.version, "reviewed", "yes")
    client.delete_prompt_version_tag("qa-bot", second.version, "reviewed")
    client.delete_prompt_version("qa-bot", second.version)
    client.delete_prompt_version("qa-bot", first.version)
    client.delete_prompt("qa-bot")

    assert [e.type.removeprefix("mlflow.prompt.") for e in events] == [
        "created",
        "version_created",
        "version_created",
        "alias_set",
        "alias_deleted",
        "tag_set",
        "tag_deleted",
        "version_tag_set",
        "version_tag_deleted",
        "version_deleted",
        "version_deleted",
        "deleted",
    ]
    _check(events, subject_of, assert_valid_event)
    data = [e.data for e in events]
    assert all(d["name"] == "qa-bot" for d in data)
    assert data[0]["prompt_uri"] == "prompts:/qa-bot"
    assert [(d["version"], d["prompt_uri"]) for d in data[1:3]] == [
        ("1", "prompts:/qa-bot/1"),
        ("2", "prompts:/qa-bot/2"),
    ]
    assert (data[3]["alias"], data[3]["version"], data[3]["prompt_uri"]) == (
        "production",
        "1",
        "prompts:/qa-bot@production",
    )
    assert (data[4]["alias"], data[4]["prompt_uri"]) == ("production", "prompts:/qa-bot@production")
    assert (data[5]["key"], data[5]["value"]) == ("owner", "ana")
    assert data[6]["key"] == "owner"
    assert (data[7]["version"], data[7]["key"], data[7]["value"]) == ("2", "reviewed", "yes")
    assert (data[8]["version"], data[8]["key"]) == ("2", "reviewed")
    assert [d["version"] for d in data[9:11]] == ["2", "1"]
    _no_template(events)


@genai
def test_no_prompt_operation_ever_publishes_a_model_event(tracking, record, subject_of, assert_valid_event):
    """Regression (issue 17, problem 2): a deployer listening for mlflow.model.alias_set "production" must see the
    model's alias, and never the prompt's, whatever API touched the prompt."""
    events = record()
    client = MlflowClient()
    chat = [{"role": "system", "content": "TEMPLATE-SECRET"}, {"role": "user", "content": "{{question}}"}]
    client.register_prompt("qa-bot", chat, tags={"team": "search"})  # a chat prompt, through the client
    client.register_prompt("qa-bot", _TEMPLATE, tags={"team": "search"})  # an existing prompt: its tags set again
    client.set_prompt_alias("qa-bot", "production", 2)
    mlflow.genai.load_prompt("qa-bot", version=1)
    client.search_prompts()
    client.set_prompt_tag("qa-bot", "stage", "live")
    client.set_prompt_version_tag("qa-bot", 1, "reviewed", "yes")
    client.create_registered_model("churn")  # a model, promoted alongside the prompt
    mv = client.create_model_version("churn", "mlflow-artifacts:/0/models/m-1/artifacts")
    client.set_registered_model_alias("churn", "production", mv.version)
    client.delete_prompt_alias("qa-bot", "production")
    client.delete_prompt_version("qa-bot", 1)

    model_events = [e for e in events if e.type.startswith("mlflow.model.")]
    assert [(e.type, e.data["name"]) for e in model_events] == [
        ("mlflow.model.registered", "churn"),
        ("mlflow.model.version_created", "churn"),
        ("mlflow.model.alias_set", "churn"),
    ]
    assert model_events[-1].data["model_uri"] == "models:/churn@production"
    prompt_events = [e for e in events if e.type.startswith("mlflow.prompt.")]
    assert len(prompt_events) + len(model_events) == len(events)
    assert [e.type.removeprefix("mlflow.prompt.") for e in prompt_events] == [
        "created",
        "version_created",
        "tag_set",  # register_prompt on an existing prompt sets its tags again
        "version_created",
        "alias_set",
        "tag_set",
        "version_tag_set",
        "alias_deleted",
        "version_deleted",
    ]
    _check(prompt_events, subject_of, assert_valid_event)
    assert not any(e.data.get("model_uri", "").startswith("models:/qa-bot") for e in events)
    _no_template(events)


@genai
def test_mlflow_internal_prompt_tags_are_never_published(tracking, record):
    """MLflow's own prompt tags (template, type, linked experiments) are bookkeeping, not tag events; user tags are."""
    events = record()
    mlflow.genai.register_prompt("qa-bot", _TEMPLATE, tags={"team": "search"})
    client = MlflowClient()
    # MLflow's own bookkeeping tags start with "_mlflow" (it links a prompt to experiments with
    # "_mlflow_experiment_ids", in a thread of its own: setting that very key here races MLflow's insert)
    client.set_prompt_tag("qa-bot", "_mlflow_test_marker", f",{tracking.experiment_id},")
    client.set_prompt_version_tag("qa-bot", 1, "mlflow.prompt.text", "TEMPLATE-SECRET rewritten")
    client.set_prompt_tag("qa-bot", "team", "search")

    assert events.types() == ["mlflow.prompt.created", "mlflow.prompt.version_created", "mlflow.prompt.tag_set"]
    assert events[-1].data["key"] == "team"
    _no_template(events)


@genai
def test_prompt_tags_follow_the_deny_list(tracking, record):
    """A denied key is never published for a prompt or a prompt version tag."""
    mlflow.genai.register_prompt("qa-bot", _TEMPLATE)
    events = record(deny_keys=("*secret*",))
    mlflow.genai.set_prompt_tag("qa-bot", "client_secret", "s3cr3t-value")
    mlflow.genai.set_prompt_version_tag("qa-bot", 1, "client_secret", "s3cr3t-value")
    mlflow.genai.set_prompt_tag("qa-bot", "owner", "ana")

    assert [(e.type, e.data["key"]) for e in events] == [("mlflow.prompt.tag_set", "owner")]
    assert b"s3cr3t" not in b"".join(e.payload for e in events)


@genai
def test_a_prompt_changed_through_the_registry_client_is_still_a_prompt(
    tracking, record, subject_of, assert_valid_event
):
    """A call that names the prompt and nothing more (what MLflow 2.21's ``delete_prompt_alias`` sends, and any
    caller going straight to the registry) is known for a prompt from the results this process saw before."""
    mlflow.genai.register_prompt("qa-bot-direct", _TEMPLATE)  # before the hook: nothing learned from it
    registry = MlflowClient()._get_registry_client()  # MLflow's own registry client, as its older prompt APIs used
    events = record()
    assert registry.get_model_version("qa-bot-direct", 1).tags  # a result that says "prompt"
    registry.set_registered_model_alias("qa-bot-direct", "production", 1)
    registry.delete_registered_model_alias("qa-bot-direct", "production")

    assert events.types() == ["mlflow.prompt.alias_set", "mlflow.prompt.alias_deleted"]
    _check(events, subject_of, assert_valid_event, "qa-bot-direct")


def test_the_top_level_prompt_api_publishes_prompt_events_only(tracking, record, subject_of, assert_valid_event):
    """``mlflow.register_prompt`` / ``set_prompt_alias`` / ``delete_prompt_alias`` (MLflow 2.21+; MLflow 2.21 sends
    them as plain registered-model calls): prompt events, never model events."""
    events = record()
    mlflow.register_prompt("qa-bot-top", _TEMPLATE)
    mlflow.register_prompt("qa-bot-top", _TEMPLATE + " v2")
    mlflow.set_prompt_alias("qa-bot-top", "production", 1)
    mlflow.delete_prompt_alias("qa-bot-top", "production")

    assert events.types() == [
        "mlflow.prompt.created",
        "mlflow.prompt.version_created",
        "mlflow.prompt.version_created",
        "mlflow.prompt.alias_set",
        "mlflow.prompt.alias_deleted",
    ]
    _check(events, subject_of, assert_valid_event, "qa-bot-top")
    assert (events[3].data["alias"], events[3].data["version"]) == ("production", "1")
    _no_template(events)


@genai
def test_a_name_nothing_said_anything_about_is_looked_up_where_the_hook_allows_it(tracking):
    """``is_prompt_name``: a call naming an unseen prompt (no result, no tags) asks the registry, once, through the
    store the call used; an unseen model stays a model; a name the registry does not know is taken for a model."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    from databricks_nats.integrations.mlflow import prompts, registry

    mlflow.genai.register_prompt("qa-bot-unseen", _TEMPLATE)  # no hook: this process learned nothing of it
    MlflowClient().create_registered_model("churn-unseen")
    store = SqlAlchemyStore(tracking.uri)
    asked: list[str] = []

    def lookup(name: str) -> bool | None:
        asked.append(name)
        return prompts.registered_is_prompt(store, name)

    def alias_set(name: str):
        return registry.describe_registry_call(
            "alias_set", None, (name, "production", "1"), {}, False, None, NO_UI, lookup
        )

    try:
        assert alias_set("qa-bot-unseen")[0] == "mlflow.prompt.alias_set"
        assert alias_set("qa-bot-unseen")[0] == "mlflow.prompt.alias_set"  # learned: not asked again
        assert alias_set("churn-unseen")[0] == "mlflow.model.alias_set"
        assert alias_set("no-such-name")[0] == "mlflow.model.alias_set"
        assert asked == ["qa-bot-unseen", "churn-unseen", "no-such-name"]
    finally:
        store.engine.dispose()


@genai
def test_the_hook_and_the_webhook_receiver_give_each_prompt_change_one_id(tracking, record):
    """MLflow's prompt webhooks (the payloads its server builds from the request) get the hook's ids."""
    events = record()
    mlflow.genai.register_prompt("qa-bot-both", _TEMPLATE, commit_message="first")
    mlflow.genai.set_prompt_alias("qa-bot-both", "production", 1)
    mlflow.genai.delete_prompt_alias("qa-bot-both", "production")
    mlflow.genai.set_prompt_tag("qa-bot-both", "owner", "ana")
    MlflowClient().delete_prompt_tag("qa-bot-both", "owner")
    mlflow.genai.set_prompt_version_tag("qa-bot-both", 1, "reviewed", "yes")
    MlflowClient().delete_prompt_version_tag("qa-bot-both", 1, "reviewed")
    name = {"name": "qa-bot-both"}
    webhooks = [  # (entity.action, payload) in the order of the calls above
        ("prompt.created", {**name, "tags": {}, "description": "first"}),
        ("prompt_version.created", {**name, "version": "1", "template": _TEMPLATE, "tags": {}, "description": "first"}),
        ("prompt_alias.created", {**name, "alias": "production", "version": "1"}),
        ("prompt_alias.deleted", {**name, "alias": "production"}),
        ("prompt_tag.set", {**name, "key": "owner", "value": "ana"}),
        ("prompt_tag.deleted", {**name, "key": "owner"}),
        ("prompt_version_tag.set", {**name, "version": "1", "key": "reviewed", "value": "yes"}),
        ("prompt_version_tag.deleted", {**name, "version": "1", "key": "reviewed"}),
    ]

    for described in assert_same_ids(events, webhooks):
        assert _TEMPLATE not in str(described[1])  # the receiver drops the template too
