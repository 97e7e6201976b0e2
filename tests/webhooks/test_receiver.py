"""The receiver over real HTTP and a real nats-server: what it refuses (and counts), what it publishes, once.

MLflow deliveries here are signed exactly as MLflow signs them (``mlflow.sign``, checked against MLflow's own
``_generate_hmac_signature`` below when MLflow 3.3+ is installed); the real MLflow server's deliveries are
in ``test_mlflow_server.py``. Job notification bodies are the ones Databricks documents.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest

from databricks_nats.integrations.mlflow.facts import fact_id
from databricks_nats.integrations.webhooks import mlflow as mlflow_webhooks
from tests.webhooks.shared import JOBS_PASSWORD, JOBS_USER, SECRET


def _alias_body(name: str, alias: str = "champion", version: str = "3") -> bytes:
    data = {"name": name, "alias": alias, "version": version}
    body = {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-12-02T10:00:00+00:00",
        "data": data,
    }
    return json.dumps(body).encode()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_our_signature_is_mlflows() -> None:
    """The scheme verified is the one MLflow's delivery code signs with (when an MLflow with webhooks is here)."""
    delivery = pytest.importorskip("mlflow.webhooks.delivery", reason="MLflow < 3.3 has no webhooks")
    payload = _alias_body("m").decode()
    theirs = delivery._generate_hmac_signature(SECRET, "d-1", "1764669600", payload)
    assert mlflow_webhooks.sign(SECRET, "d-1", "1764669600", payload.encode()) == theirs


def test_a_signed_delivery_is_published_once_and_its_redelivery_is_not(
    receiver, post, signed, stored, assert_valid_event
) -> None:
    body = _alias_body("churn")
    headers = signed(body)
    status, answer = post("/mlflow", body, headers)
    assert status == 200, answer
    expected_id = fact_id("mlflow.model.alias_set", {"name": "churn", "alias": "champion", "version": "3"})
    assert answer["id"] == expected_id
    assert post("/mlflow", body, headers) == (200, {"ok": True, "duplicate": True})  # the same delivery again
    assert post("/mlflow", body, signed(body))[0] == 200  # MLflow told twice (new delivery id): the same fact

    events = stored()
    assert [e["envelope"]["id"] for e in events] == [expected_id]
    envelope = events[0]["envelope"]
    assert_valid_event(envelope)
    assert envelope["type"] == "databricks.mlflow.model.alias_set"
    assert events[0]["subject"].endswith(".mlflow.model.churn.alias_set")
    assert envelope["data"]["model_uri"] == "models:/churn@champion"
    assert envelope["data"]["is_unity_catalog"] is False
    assert receiver.stats() | {"refused": {}} == {
        "received": 3, "published": 2, "duplicates": 1, "ignored": 0, "refused": {}, "refused_total": 0,
    }  # fmt: skip


def test_unsigned_badly_signed_and_replayed_deliveries_are_refused_and_counted(receiver, post, signed, stored) -> None:
    body = _alias_body("fraud")
    now = time.time()
    cases = {
        "unsigned": {},
        "bad_signature": signed(body, secret="not-the-secret"),
        "stale": signed(body, at=now - 301),  # a captured delivery replayed after the window
        "bad_timestamp": {**signed(body), mlflow_webhooks.TIMESTAMP_HEADER: "yesterday"},
    }
    for reason, headers in cases.items():
        status, answer = post("/mlflow", body, headers)
        assert (status, answer["reason"]) == ({"bad_timestamp": 400}.get(reason, 401), reason)
    tampered = signed(body)
    status, answer = post("/mlflow", _alias_body("fraud", version="4"), tampered)  # body changed after signing
    assert (status, answer["reason"]) == (401, "bad_signature")
    future = signed(body, at=now + 301)
    assert post("/mlflow", body, future)[1]["reason"] == "stale"

    assert receiver.stats()["refused"] == {
        "unsigned": 1, "bad_signature": 2, "stale": 2, "bad_timestamp": 1,
    }  # fmt: skip
    assert receiver.stats()["published"] == 0
    assert stored() == []
    assert post("/health", b"", {})[0] == 404  # health is a GET; a POST there is no route


def test_a_rotated_secret_keeps_both_secrets_valid_until_the_old_one_is_dropped(
    nats_server, namespace, tmp_path, signed
) -> None:
    from databricks_nats.client import Client
    from databricks_nats.integrations.webhooks import ReceiverConfig, WebhookReceiver
    from databricks_nats.ports import NoContext
    from databricks_nats.values import Secret

    config = ReceiverConfig(port=0, mlflow_secrets=(Secret("new"), Secret("old")))
    with Client(url=nats_server.url, spool_dir=str(tmp_path / "s"), context=NoContext(), **namespace) as client:
        receiver = WebhookReceiver(config, client=client)
        body = _alias_body("m")
        for secret, expected in (("old", 200), ("new", 200), ("other", 401)):
            status, _ = receiver.handle("/mlflow", signed(body, secret=secret), body)
            assert status == expected, secret
        receiver.close()


def test_bodies_that_are_too_large_not_json_or_to_no_route_are_refused(receiver, post, signed) -> None:
    big = b"{" + b" " * (64 * 1024) + b"}"
    assert post("/mlflow", big, signed(big))[1]["reason"] == "too_large"
    assert post("/mlflow", b"[1, 2]", signed(b"[1, 2]"))[1]["reason"] == "bad_json"
    incomplete = json.dumps({"entity": "model_version_alias", "action": "created", "data": {"name": "m"}}).encode()
    assert post("/mlflow", incomplete, signed(incomplete))[:1] == (400,)
    assert post("/nowhere", b"{}")[1]["reason"] == "not_found"
    budget = json.dumps({"entity": "budget_policy", "action": "exceeded", "data": {}}).encode()
    assert post("/mlflow", budget, signed(budget)) == (200, {"ok": True, "ignored": "budget_policy.exceeded"})
    own = {
        "entity": "prompt_tag",
        "action": "set",
        "data": {"name": "p", "key": "_mlflow_experiment_ids", "value": "0"},
    }
    own_body = json.dumps(own).encode()  # MLflow's own tag (the prompt linked to an experiment): the hook skips it too
    assert post("/mlflow", own_body, signed(own_body))[1]["ignored"] == "prompt_tag.set"
    stats = receiver.stats()
    assert stats["refused"] == {"too_large": 1, "bad_json": 1, "malformed": 1, "not_found": 1}
    assert stats["ignored"] == 2


def test_health_shows_the_routes_and_counters(receiver) -> None:
    import urllib.request

    with urllib.request.urlopen(receiver.url + "/health", timeout=10) as r:  # noqa: S310 - local receiver
        health = json.loads(r.read())
    assert health["ok"] is True
    assert health["mlflow"] is health["jobs"] is True
    assert health["received"] == 0


# ---- Databricks job notifications (the payloads Databricks documents for webhook destinations) ----------------

_JOB = {"job_id": 281874479417551, "name": "nightly-etl"}


def _notification(event_type: str, run_id: int = 41847992357943, **extra: object) -> dict[str, object]:
    return {"event_type": event_type, "workspace_id": "1234567890", "run": {"run_id": run_id}, "job": _JOB, **extra}


def test_job_notifications_become_job_run_events(receiver, post, stored, assert_valid_event) -> None:
    auth = _basic(JOBS_USER, JOBS_PASSWORD)
    kinds = {
        "jobs.on_start": "started",
        "jobs.on_success": "succeeded",
        "jobs.on_failure": "failed",
        "jobs.on_duration_warning_threshold_exceeded": "duration_exceeded",
        "jobs.on_streaming_backlog_exceeded": "backlog_exceeded",
    }
    for notification in kinds:
        status, answer = post("/databricks/jobs", _notification(notification), auth)
        assert status == 200, answer
    task = _notification("jobs.on_failure", run_id=77, task={"task_key": "train"})
    task["run"] = {"run_id": 77, "parent_run_id": 41847992357943}
    assert post("/databricks/jobs", task, auth)[0] == 200

    events = [e["envelope"] for e in stored()]
    assert [e["type"] for e in events] == [f"databricks.databricks.job_run.{a}" for a in kinds.values()] + [
        "databricks.databricks.job_run.failed"
    ]
    for envelope in events:
        assert_valid_event(envelope)
    first = events[0]["data"]
    assert {k: first[k] for k in ("job_id", "job_name", "run_id", "workspace_id", "notification")} == {
        "job_id": "281874479417551",
        "job_name": "nightly-etl",
        "run_id": "41847992357943",
        "workspace_id": "1234567890",
        "notification": "jobs.on_start",
    }
    assert first["run_url"] == "https://adb-1.2.azuredatabricks.net/jobs/281874479417551/runs/41847992357943"
    assert events[0]["dataref"] == first["run_url"]
    assert stored()[0]["subject"].endswith(".databricks.job_run.281874479417551.started")
    assert (events[-1]["data"]["task_key"], events[-1]["data"]["parent_run_id"]) == ("train", "41847992357943")


def test_a_retried_job_notification_is_stored_once(receiver, post, stored) -> None:
    auth = _basic(JOBS_USER, JOBS_PASSWORD)
    for _ in range(3):  # Databricks retries a notification it could not confirm
        assert post("/databricks/jobs", _notification("jobs.on_failure"), auth)[0] == 200
    assert len(stored()) == 1


def test_job_notifications_without_the_right_basic_auth_are_refused(receiver, post, stored) -> None:
    body = _notification("jobs.on_failure")
    for headers in ({}, _basic(JOBS_USER, "wrong"), _basic("someone", JOBS_PASSWORD), {"Authorization": "Bearer x"}):
        status, answer = post("/databricks/jobs", body, headers)
        assert (status, answer["reason"]) == (401, "unauthorized")
        assert answer["_headers"]["WWW-Authenticate"].startswith("Basic")
    assert receiver.stats()["refused"] == {"unauthorized": 4}
    assert stored() == []
    malformed = {"event_type": "jobs.on_failure", "job": _JOB}  # no run
    assert post("/databricks/jobs", malformed, _basic(JOBS_USER, JOBS_PASSWORD))[1]["reason"] == "malformed"


def test_a_route_without_its_credential_is_not_there(nats_server, namespace, tmp_path) -> None:
    """Nothing anonymous is published: a receiver configured for MLflow only has no job route."""
    from databricks_nats.client import Client
    from databricks_nats.integrations.webhooks import ReceiverConfig, WebhookReceiver
    from databricks_nats.ports import NoContext
    from databricks_nats.values import Secret

    with Client(url=nats_server.url, spool_dir=str(tmp_path / "s"), context=NoContext(), **namespace) as client:
        receiver = WebhookReceiver(ReceiverConfig(port=0, mlflow_secrets=(Secret("s"),)), client=client)
        status, answer = receiver.handle("/databricks/jobs", {}, json.dumps(_notification("jobs.on_start")).encode())
        assert (status, answer["reason"]) == (404, "not_found")
        receiver.close()


def test_an_event_is_answered_once_spooled_and_reaches_the_stream_when_nats_returns(
    fresh_server, namespace, tmp_path, signed
) -> None:
    """NATS away: the sender still gets 200 (the event is on disk) and the event is stored once NATS is back."""
    from databricks_nats.client import Client
    from databricks_nats.integrations.webhooks import ReceiverConfig, WebhookReceiver
    from databricks_nats.ports import NoContext
    from databricks_nats.testing import read_stream
    from databricks_nats.values import Secret

    settings = {"spool_dir": str(tmp_path / "spool"), "context": NoContext(), "ack_timeout": 1.0, **namespace}
    client = Client(url=fresh_server.url, spool_sync="immediate", **settings)
    client.ensure_stream()
    fresh_server.stop()
    receiver = WebhookReceiver(ReceiverConfig(port=0, mlflow_secrets=(Secret(SECRET),)), client=client)
    body = _alias_body("offline-" + uuid.uuid4().hex[:6])
    status, answer = receiver.handle("/mlflow", signed(body), body)
    assert status == 200, answer
    fresh_server.start()
    assert client.flush(60).ok
    assert [m["envelope"]["id"] for m in read_stream(fresh_server.url, client.settings.stream_name)] == [answer["id"]]
    receiver.close()
    client.close()
