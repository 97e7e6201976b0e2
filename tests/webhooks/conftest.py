"""Fixtures for the webhook receiver: a real receiver publishing to a real nats-server, HTTP posts, the stream.

* ``receiver``: a started ``WebhookReceiver`` (any free port) with an MLflow secret and job notification
  credentials, publishing to the module's nats-server in this test's own namespace (its own stream, spool).
* ``stored()``: the envelopes in that namespace's stream, once the receiver's client flushed.
* ``post(path, body, headers)``: (status, JSON answer) of one POST to the receiver.
* ``signed(body)``: the headers MLflow would send for ``body`` (``mlflow.sign``), now or at a given time.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from databricks_nats.client import Client
from databricks_nats.integrations.webhooks import ReceiverConfig, WebhookReceiver
from databricks_nats.integrations.webhooks import mlflow as mlflow_webhooks
from databricks_nats.model import catalog
from databricks_nats.ports import NoContext
from databricks_nats.testing import NatsServer, read_stream
from databricks_nats.values import Secret
from tests.webhooks.shared import JOBS_PASSWORD, JOBS_USER, SECRET


@pytest.fixture
def receiver(nats_server: NatsServer, namespace: dict[str, str], tmp_path: Any) -> Iterator[WebhookReceiver]:
    config = ReceiverConfig(
        port=0,
        mlflow_secrets=(Secret(SECRET),),
        jobs_user=JOBS_USER,
        jobs_password=Secret(JOBS_PASSWORD),
        workspace_url="https://adb-1.2.azuredatabricks.net",
        max_body_bytes=64 * 1024,
    )
    client = Client(
        url=nats_server.url,
        spool_dir=str(tmp_path / "spool"),
        spool_sync="immediate",
        ack_timeout=1.0,
        context=NoContext(),
        **namespace,
    )
    with WebhookReceiver(config, client=client) as r:
        yield r
    client.close()


@pytest.fixture
def stored(receiver: WebhookReceiver, nats_server: NatsServer) -> Callable[[], list[dict[str, Any]]]:
    def read() -> list[dict[str, Any]]:
        assert receiver.client.flush(20).ok
        return read_stream(nats_server.url, receiver.client.settings.stream_name)

    return read


@pytest.fixture
def post(receiver: WebhookReceiver) -> Callable[..., tuple[int, dict[str, Any]]]:
    def send(path: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - our own local receiver
            receiver.url + path,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - our own local receiver
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as e:
            return e.code, {**json.loads(e.read() or b"{}"), "_headers": dict(e.headers)}

    return send


@pytest.fixture(scope="session")
def signed() -> Callable[..., dict[str, str]]:
    def headers(body: bytes, *, secret: str = SECRET, at: float | None = None, delivery: str | None = None) -> dict:
        stamp = str(int(time.time() if at is None else at))
        delivery = delivery or str(uuid.uuid4())
        return {
            mlflow_webhooks.DELIVERY_ID_HEADER: delivery,
            mlflow_webhooks.TIMESTAMP_HEADER: stamp,
            mlflow_webhooks.SIGNATURE_HEADER: mlflow_webhooks.sign(secret, delivery, stamp, body),
        }

    return headers


@pytest.fixture(scope="session")
def assert_valid_event() -> Callable[[dict[str, Any]], None]:
    """Validate an envelope against the envelope schema and its data against its catalogued type's schema."""
    envelope_schema = Draft202012Validator(catalog.envelope_schema())

    def check(envelope: dict[str, Any]) -> None:
        errors = [e.message for e in envelope_schema.iter_errors(envelope)]
        assert not errors, f"envelope of {envelope.get('type')}: {errors}"
        etype = catalog.lookup(envelope["type"].removeprefix("databricks."))
        errors = [
            f"{list(e.path)}: {e.message}" for e in Draft202012Validator(etype.schema()).iter_errors(envelope["data"])
        ]
        assert not errors, f"data of {etype.name}: {errors}"
        undeclared = set(envelope["data"]) - set(etype.fields) - {"context", "truncated", "truncated_fields"}
        assert not undeclared, f"{etype.name} carries undeclared fields {undeclared}"

    return check
