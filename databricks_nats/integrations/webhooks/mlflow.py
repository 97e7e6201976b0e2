"""MLflow OSS webhooks (MLflow 3.3+): verify a delivery, then describe it as one of our ``mlflow.*`` events.

MLflow signs a delivery (``mlflow/webhooks/delivery.py``) with the webhook's secret: headers
``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp`` (Unix seconds) and ``X-MLflow-Signature`` =
``v1,<base64 HMAC-SHA256 of "<delivery id>.<timestamp>.<raw body>">``; the body is
``{"entity", "action", "timestamp", "data": <payload>}``. ``verify`` checks the signature against each
configured secret (constant time; several secrets let one be rotated) and the timestamp against the replay
window. ``describe`` maps the payload onto the type and fields ``model/types.py`` declares, with the id
``facts.fact_id`` gives it: the change the MLflow hook announced in the process that made it has the
same id, and the stream stores it once. Never the prompt template, never a description's text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from databricks_nats.integrations.mlflow.facts import fact_id
from databricks_nats.integrations.mlflow.prompts import internal_prompt_tag, prompt_uri, user_tag
from databricks_nats.integrations.mlflow.urls import model_uri

__all__ = [
    "DELIVERY_ID_HEADER",
    "EVENTS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Headers",
    "describe",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
_VERSION = "v1"
_TAG_VALUE_MAX = 500  # the hook's cut of a tag value (registry.py): the same value, the same fact id


class Headers(Protocol):
    """Request headers, looked up case-insensitively (``http.client`` messages; a plain dict in a test)."""

    def get(self, name: str, /) -> str | None: ...


# MLflow's "<entity>.<action>" -> our event type (MLflow 3.3 - 3.17 list these; budget_policy.exceeded is ignored)
EVENTS: dict[str, str] = {
    "registered_model.created": "mlflow.model.registered",
    "model_version.created": "mlflow.model.version_created",
    "model_version_tag.set": "mlflow.model.version_tag_set",
    "model_version_tag.deleted": "mlflow.model.version_tag_deleted",
    "model_version_alias.created": "mlflow.model.alias_set",
    "model_version_alias.deleted": "mlflow.model.alias_deleted",
    "prompt.created": "mlflow.prompt.created",
    "prompt_version.created": "mlflow.prompt.version_created",
    "prompt_tag.set": "mlflow.prompt.tag_set",
    "prompt_tag.deleted": "mlflow.prompt.tag_deleted",
    "prompt_version_tag.set": "mlflow.prompt.version_tag_set",
    "prompt_version_tag.deleted": "mlflow.prompt.version_tag_deleted",
    "prompt_alias.created": "mlflow.prompt.alias_set",
    "prompt_alias.deleted": "mlflow.prompt.alias_deleted",
}

# action -> the payload fields (besides the name) that identify the change
_NEEDS: dict[str, tuple[str, ...]] = {
    "version_created": ("version",),
    "version_tag_set": ("version", "key"),
    "version_tag_deleted": ("version", "key"),
    "tag_set": ("key",),
    "tag_deleted": ("key",),
    "alias_set": ("alias", "version"),
    "alias_deleted": ("alias",),
}


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The signature header MLflow sends for this delivery (``v1,<base64>``)."""
    content = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode("utf-8"), content, hashlib.sha256).digest()
    return f"{_VERSION},{base64.b64encode(digest).decode()}"


def verify(headers: Headers, body: bytes, secrets: Iterable[str], *, window: float, now: float) -> str | None:
    """None when the delivery is signed by one of ``secrets`` within ``window`` seconds of ``now``; else why not.

    Reasons: ``unsigned`` (no signature or delivery id), ``bad_timestamp``, ``stale`` (outside the window,
    either side: a replay or a skewed clock), ``bad_signature``.
    """
    signature = headers.get(SIGNATURE_HEADER) or ""
    delivery = headers.get(DELIVERY_ID_HEADER) or ""
    stamp = headers.get(TIMESTAMP_HEADER) or ""
    if not signature or not delivery:
        return "unsigned"
    try:
        sent = int(stamp)
    except ValueError:
        return "bad_timestamp"
    if abs(now - sent) > window:
        return "stale"
    given = [s.partition(",")[2].encode() for s in signature.split() if s.startswith(f"{_VERSION},")]
    ok = False
    for secret in secrets:
        expected = sign(secret, delivery, stamp, body).partition(",")[2].encode()
        for candidate in given:
            ok |= hmac.compare_digest(expected, candidate)  # every pair compared: no early exit to time
    return None if ok else "bad_signature"


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _mlflows_own(event_type: str, key: str | None) -> bool:
    """A tag MLflow keeps for itself: ``mlflow.*`` / ``_mlflow*`` on a prompt (the experiments it is linked to…),
    the prompt registry's on a model."""
    if event_type.startswith("mlflow.prompt."):
        return not user_tag(key)
    return internal_prompt_tag(key)


def describe(body: Mapping[str, Any]) -> tuple[str, dict[str, Any], str | None] | None:
    """``(event type, data, event id)`` for one delivery body, or None for an event we do not map (and MLflow's
    own tags: ``mlflow.*`` / ``_mlflow*`` on a prompt, the prompt registry's on a model, as the hook does).

    Raises ``ValueError`` when a mapped event lacks the fields that identify it (a malformed delivery).
    """
    event_type = EVENTS.get(f"{body.get('entity')}.{body.get('action')}")
    if event_type is None:
        return None
    payload = body.get("data")
    if not isinstance(payload, Mapping):
        raise ValueError("no data object")
    name = _text(payload.get("name"))
    if not name:
        raise ValueError("no name")
    version, alias, key = _text(payload.get("version")), _text(payload.get("alias")), _text(payload.get("key"))
    action = event_type.rsplit(".", 1)[1]
    given = {"version": version, "alias": alias, "key": key}
    for field in _NEEDS.get(action, ()):
        if not given[field]:
            raise ValueError(f"no {field}")
    if "tag" in action and _mlflows_own(event_type, key):
        return None  # the hook skips these too
    data: dict[str, Any]
    if event_type.startswith("mlflow.model."):
        data = {"name": name, "catalog_name": None, "is_unity_catalog": False}
        data["model_uri"] = model_uri(name, version, alias if "alias" in action else None)
    else:
        data = {"name": name, "prompt_uri": prompt_uri(name, version, alias if "alias" in action else None)}
    if version and action != "alias_deleted":
        data["version"] = version
    if "alias" in action:
        data["alias"] = alias
    if "tag" in action:
        data["key"] = key
        if action.endswith("tag_set"):
            data["value"] = str(payload.get("value") or "")[:_TAG_VALUE_MAX]
    if event_type == "mlflow.model.version_created":
        data["source"] = str(payload.get("source") or "")[:1000] or None
        data["run_id"] = _text(payload.get("run_id"))
    return event_type, data, fact_id(event_type, data)
