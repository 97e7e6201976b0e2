"""The credentials the test receiver is configured with (its MLflow secret, its job notification login)."""

from __future__ import annotations

import uuid
from typing import Any

SECRET = "whsec-" + uuid.uuid4().hex
JOBS_USER, JOBS_PASSWORD = "databricks", "pw-" + uuid.uuid4().hex


def assert_same_ids(events: Any, webhooks: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Each MLflow webhook ``(entity.action, payload)``, described by the receiver, has the type and the id of the
    hook's event for the same change (in the same order); return the receiver's descriptions."""
    from databricks_nats.integrations.webhooks.mlflow import describe

    assert len(events) == len(webhooks)
    found = []
    for event, (kind, payload) in zip(events, webhooks, strict=True):
        entity, action = kind.split(".")
        described = describe({"entity": entity, "action": action, "data": payload})
        assert described is not None
        assert (described[0], described[2]) == (event.type, event.envelope["id"]), kind
        found.append(described)
    return found
