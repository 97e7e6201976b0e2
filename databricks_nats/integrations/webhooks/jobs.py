"""Databricks job notifications (a notification destination of type webhook) as ``databricks.job_run.*`` events.

Databricks POSTs one JSON body per notification, authenticated with the destination's basic-auth username
and password (``check_basic_auth``, constant time)::

    {"event_type": "jobs.on_failure", "workspace_id": "1234567890",
     "run": {"run_id": "41847992357943"}, "job": {"job_id": "281874479417551", "name": "nightly-etl"}}

a task notification adds ``"task": {"task_key": ...}`` and ``run.parent_run_id``. ``describe`` turns it into
``(type, data, id)``; the id is derived from (type, run id), so a notification Databricks retries is stored
once. A streaming backlog notification repeats every 30 minutes while the backlog stays high: its id also
holds the 10-minute slot it arrived in, so each repeat is its own event and a retry is not.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any

from databricks_nats.model.ids import derived_id

__all__ = ["NOTIFICATIONS", "check_basic_auth", "describe", "run_url"]

NOTIFICATIONS: dict[str, str] = {
    "jobs.on_start": "databricks.job_run.started",
    "jobs.on_success": "databricks.job_run.succeeded",
    "jobs.on_failure": "databricks.job_run.failed",
    "jobs.on_duration_warning_threshold_exceeded": "databricks.job_run.duration_exceeded",
    "jobs.on_streaming_backlog_exceeded": "databricks.job_run.backlog_exceeded",
}
_BACKLOG_SLOT_S = 600


def check_basic_auth(header: str | None, user: str, password: str) -> bool:
    """True when ``Authorization: Basic …`` names this user and password (both compared in constant time)."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    given_user, sep, given_password = given.partition(b":")
    user_ok = hmac.compare_digest(given_user, user.encode("utf-8"))
    password_ok = hmac.compare_digest(given_password, password.encode("utf-8"))
    return bool(sep) and user_ok and password_ok


def run_url(workspace_url: str | None, job_id: str, run_id: str) -> str | None:
    """The run's page in the workspace UI, when the receiver knows the workspace URL."""
    if not workspace_url:
        return None
    return f"{workspace_url.rstrip('/')}/jobs/{job_id}/runs/{run_id}"


def _id(value: Any) -> str | None:
    if value is None or value == "" or isinstance(value, (dict, list, bool)):
        return None
    return str(value)


def _object(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name)
    return value if isinstance(value, Mapping) else {}


def _duration_ms(run: Mapping[str, Any]) -> int | None:
    for name in ("run_duration", "duration_ms", "execution_duration"):  # Jobs API names, in ms, when present
        value = run.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return int(value)
    return None


def describe(
    body: Mapping[str, Any], *, workspace_url: str | None = None, now: float = 0.0
) -> tuple[str, dict[str, Any], str] | None:
    """``(event type, data, event id)`` of one notification; None for a notification kind we do not map.

    Raises ``ValueError`` when the notification lacks its job id or run id (a malformed body).
    """
    event_type = NOTIFICATIONS.get(str(body.get("event_type") or ""))
    if event_type is None:
        return None
    run, job, task = _object(body, "run"), _object(body, "job"), _object(body, "task")
    job_id, run_id = _id(job.get("job_id")), _id(run.get("run_id"))
    if not job_id or not run_id:
        raise ValueError("no job.job_id or run.run_id")
    name = job.get("name")
    data: dict[str, Any] = {
        "job_id": job_id,
        "job_name": str(name)[:500] if name else None,
        "run_id": run_id,
        "parent_run_id": _id(run.get("parent_run_id")),
        "task_key": _id(task.get("task_key")),
        "run_url": run_url(workspace_url, job_id, run_id),
        "duration_ms": _duration_ms(run),
        "workspace_id": _id(body.get("workspace_id")),
        "notification": str(body["event_type"]),
    }
    parts: list[object] = [run_id]
    if event_type.endswith("backlog_exceeded"):
        parts.append(int(now // _BACKLOG_SLOT_S))
    return event_type, data, derived_id(event_type, *parts)
