"""A real ``mlflow server`` with a webhook (``MlflowClient().create_webhook``) pointing at a real receiver.

Registry and prompt changes are made through the REST client in this process, which has no hook: the events
on the stream come from the server's webhook deliveries alone. The server needs, for a loopback receiver,
``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https`` and (MLflow 3.17+, which refuses private addresses at connect
time) ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true``; ``MLFLOW_WEBHOOK_CACHE_TTL=1`` makes a new webhook seen at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

mlflow = pytest.importorskip("mlflow")
from packaging.version import Version  # noqa: E402

if Version(mlflow.__version__).release < (3, 3):
    pytest.skip(f"MLflow {mlflow.__version__} has no webhooks (MLflow 3.3+)", allow_module_level=True)

from mlflow import MlflowClient  # noqa: E402

from databricks_nats.client import Client  # noqa: E402
from databricks_nats.integrations.mlflow.facts import fact_id  # noqa: E402
from databricks_nats.integrations.mlflow.registry import describe_registry_call  # noqa: E402
from databricks_nats.integrations.webhooks import ReceiverConfig, WebhookReceiver  # noqa: E402
from databricks_nats.ports import NoContext  # noqa: E402
from databricks_nats.testing import NatsServer, read_stream  # noqa: E402
from databricks_nats.values import Secret  # noqa: E402
from tests.mlflow_server import mlflow_server as start_mlflow_server  # noqa: E402
from tests.webhooks.shared import SECRET  # noqa: E402

pytestmark = pytest.mark.slow

WEBHOOK_ENV = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": "tQ0h3Yx1GkRr8pE8o8m1s3a2bX9QzZ9r7c2o1l0v2kE=",
}
EVENTS = [
    "registered_model.created", "model_version.created", "model_version_tag.set", "model_version_tag.deleted",
    "model_version_alias.created", "model_version_alias.deleted", "prompt.created", "prompt_version.created",
    "prompt_tag.set", "prompt_tag.deleted", "prompt_version_tag.set", "prompt_version_tag.deleted",
    "prompt_alias.created", "prompt_alias.deleted",
]  # fmt: skip


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (sqlite backend) allowed to deliver webhooks to loopback; yields its URL."""
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow-webhooks"), **WEBHOOK_ENV) as url:
        yield url


@pytest.fixture(scope="module")
def space() -> dict[str, str]:
    return {"workspace": f"wh{uuid.uuid4().hex[:10]}", "env": "test"}


@pytest.fixture(scope="module")
def hooked(mlflow_server: str, nats_server: NatsServer, space: dict[str, str], tmp_path_factory: Any) -> Iterator[Any]:
    """(receiver, MLflow client): a receiver in its own namespace with an MLflow webhook on every event."""
    client = Client(
        url=nats_server.url,
        spool_dir=str(tmp_path_factory.mktemp("receiver-spool")),
        spool_sync="immediate",
        context=NoContext(),
        **space,
    )
    receiver = WebhookReceiver(ReceiverConfig(port=0, mlflow_secrets=(Secret(SECRET),)), client=client).start()
    mlflow_client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    webhook = mlflow_client.create_webhook(
        name="databricks-nats", url=f"{receiver.url}/mlflow", events=EVENTS, secret=SECRET
    )
    time.sleep(1.5)  # past MLFLOW_WEBHOOK_CACHE_TTL: no event kind was cached without this webhook
    yield receiver, mlflow_client
    mlflow_client.delete_webhook(webhook.webhook_id)
    receiver.close()
    client.close()


def _stored(nats_server: NatsServer, receiver: WebhookReceiver, name: str, count: int) -> list[dict[str, Any]]:
    """The stored envelopes about ``name``, once ``count`` arrived (deliveries are asynchronous), in order."""
    deadline = time.monotonic() + 60
    while True:
        receiver.client.flush(10)
        mine = [
            m
            for m in read_stream(nats_server.url, receiver.client.settings.stream_name)
            if m["envelope"]["data"].get("name") == name
        ]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.2)


def _by_type(stored: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["envelope"]["type"].removeprefix("databricks."): m for m in stored}


def test_registry_changes_made_without_the_hook_arrive_as_model_events(hooked, nats_server, assert_valid_event) -> None:
    receiver, client = hooked
    name = f"churn-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    run = client.create_run("0")
    client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_model_version_tag(name, "1", "validated", "yes")
    client.delete_model_version_tag(name, "1", "validated")
    client.set_registered_model_alias(name, "champion", "1")
    client.delete_registered_model_alias(name, "champion")

    stored = _stored(nats_server, receiver, name, 6)
    events = _by_type(stored)
    assert set(events) == {
        "mlflow.model.registered", "mlflow.model.version_created", "mlflow.model.version_tag_set",
        "mlflow.model.version_tag_deleted", "mlflow.model.alias_set", "mlflow.model.alias_deleted",
    }  # fmt: skip
    for m in stored:
        assert_valid_event(m["envelope"])
        action = m["envelope"]["type"].rsplit(".", 1)[1]
        assert m["subject"] == f"dbx.{receiver.client.settings.workspace}.test.mlflow.model.{name}.{action}"
        data = m["envelope"]["data"]
        assert data["is_unity_catalog"] is False
        assert m["envelope"]["id"] == fact_id(m["envelope"]["type"].removeprefix("databricks."), data)
    created = events["mlflow.model.version_created"]["envelope"]["data"]
    assert (created["version"], created["run_id"], created["model_uri"]) == ("1", run.info.run_id, f"models:/{name}/1")
    assert events["mlflow.model.alias_set"]["envelope"]["data"]["model_uri"] == f"models:/{name}@champion"
    tag = events["mlflow.model.version_tag_set"]["envelope"]["data"]
    assert (tag["version"], tag["key"], tag["value"]) == ("1", "validated", "yes")


def test_prompt_changes_arrive_as_prompt_events_never_as_model_events_nor_with_their_text(
    hooked, nats_server, assert_valid_event
) -> None:
    receiver, client = hooked
    name = f"greeting-{uuid.uuid4().hex[:6]}"
    template = "Hello {{name}}, the launch code is 0000"
    client.register_prompt(name, template, commit_message="first words")
    client.set_prompt_alias(name, "production", 1)
    client.delete_prompt_alias(name, "production")
    client.set_prompt_tag(name, "team", "support")
    client.delete_prompt_tag(name, "team")
    client.set_prompt_version_tag(name, 1, "reviewed", "yes")
    client.delete_prompt_version_tag(name, 1, "reviewed")

    stored = _stored(nats_server, receiver, name, 8)
    events = _by_type(stored)
    assert len(stored) == 8, receiver.stats()
    assert set(events) == {
        "mlflow.prompt.created", "mlflow.prompt.version_created", "mlflow.prompt.alias_set",
        "mlflow.prompt.alias_deleted", "mlflow.prompt.tag_set", "mlflow.prompt.tag_deleted",
        "mlflow.prompt.version_tag_set", "mlflow.prompt.version_tag_deleted",
    }  # fmt: skip
    for m in stored:
        assert_valid_event(m["envelope"])
        assert ".mlflow.prompt." in m["subject"]
        text = str(m["envelope"])
        assert "launch code" not in text
        assert "first words" not in text
    assert events["mlflow.prompt.version_created"]["envelope"]["data"]["prompt_uri"] == f"prompts:/{name}/1"
    alias = events["mlflow.prompt.alias_set"]["envelope"]
    assert (alias["data"]["prompt_uri"], alias["dataref"]) == (f"prompts:/{name}@production",) * 2


def test_a_change_announced_by_the_hook_and_by_the_webhook_is_stored_once(hooked, nats_server, space, tmp_path) -> None:
    """The hook (in the process that made the change) and the receiver (told by the server) give it one id."""
    receiver, client = hooked
    name = f"fraud-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    run = client.create_run("0")
    client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    assert len(_stored(nats_server, receiver, name, 2)) == 2

    # what the hook publishes for client.set_registered_model_alias(name, "champion", "1"): its describer, its id
    described = describe_registry_call("alias_set", None, (name, "champion", "1"), {}, uc=False)
    assert described is not None
    event_type, data = described
    with Client(url=nats_server.url, spool_dir=str(tmp_path / "hook"), context=NoContext(), **space) as hook_side:
        hook_side.emit(event_type, data, id=fact_id(event_type, data))
        assert hook_side.flush(20).ok
    received = receiver.stats()["received"]
    client.set_registered_model_alias(name, "champion", "1")  # the server delivers the same change
    client.set_registered_model_alias(name, "champion", "1")  # and again: it changes nothing

    assert _wait(lambda: receiver.stats()["received"] >= received + 2)
    stored = _stored(nats_server, receiver, name, 3)
    assert [m["envelope"]["type"] for m in stored].count("databricks.mlflow.model.alias_set") == 1
    assert len(stored) == 3


def _wait(condition: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def test_a_webhook_with_the_wrong_secret_is_refused_and_counted(hooked, nats_server) -> None:
    receiver, client = hooked
    refused = receiver.stats()["refused"].get("bad_signature", 0)
    wrong = client.create_webhook(
        name="wrong-secret", url=f"{receiver.url}/mlflow", events=["registered_model.created"], secret="not-it"
    )
    try:
        time.sleep(1.5)  # past the server's webhook cache
        name = f"other-{uuid.uuid4().hex[:6]}"
        client.create_registered_model(name)
        assert _wait(lambda: receiver.stats()["refused"].get("bad_signature", 0) > refused)
        assert len(_stored(nats_server, receiver, name, 1)) == 1  # the right webhook's delivery, stored once
    finally:
        client.delete_webhook(wrong.webhook_id)
