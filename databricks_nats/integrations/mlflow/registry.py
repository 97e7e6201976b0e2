"""Describe a successful model registry store call as the data of an ``mlflow.model.*`` or ``mlflow.prompt.*`` event.

``CALLS`` lists the store methods the hook wraps; ``describe_registry_call`` says what one call changed,
from the call's arguments and its result alone (never another registry call):

* models: registered, renamed, description updated (never the text), tags set/deleted, versions created
  (with their status) and deleted, version tags set/deleted, aliases set/deleted, stage transitions, and a
  version's status change (``PENDING_REGISTRATION`` -> ``READY``/``FAILED_REGISTRATION``) seen in a later
  ``get_model_version`` result the caller got;
* prompts (``prompts.py`` tells them apart): the same changes as ``mlflow.prompt.*`` with ``prompts:/`` URIs,
  never as model events; MLflow's own tags (the template among them) are never announced.

Reads (``get_registered_model``, ``get_model_version``…) are wrapped only to learn from their results (is a
name a prompt, a version's status); they announce nothing else.

On Unity Catalog the name in an event is always the three-level name the registry resolved: taken from the
call's result when it carries one (``registered``, ``version_created``), else from ``resolve`` (the hook's
once-per-name lookup), so one model has one subject whatever the caller typed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from databricks_nats.integrations.mlflow import prompts
from databricks_nats.integrations.mlflow.urls import NO_UI, Ui, model_uri, uc_model_url

__all__ = ["CALLS", "PROMPT_NAMES", "describe_registry_call", "result_name", "typed_name"]

# (registry store method, action): the calls the hook wraps; describe_registry_call says what each one was.
CALLS: tuple[tuple[str, str], ...] = (
    ("create_registered_model", "registered"),
    ("rename_registered_model", "renamed"),
    ("update_registered_model", "description_updated"),
    ("delete_registered_model", "deleted"),
    ("set_registered_model_tag", "tag_set"),
    ("delete_registered_model_tag", "tag_deleted"),
    ("create_model_version", "version_created"),
    ("update_model_version", "version_description_updated"),
    ("delete_model_version", "version_deleted"),
    ("set_registered_model_alias", "alias_set"),
    ("delete_registered_model_alias", "alias_deleted"),
    ("transition_model_version_stage", "stage_transitioned"),
    ("set_model_version_tag", "version_tag_set"),
    ("delete_model_version_tag", "version_tag_deleted"),
    # reads: results that say whether a name is a prompt, and a version's status
    ("get_registered_model", "model_read"),
    ("get_model_version", "version_read"),
    ("get_model_version_by_alias", "alias_read"),
    # the prompt registry's own store methods (MLflow 3.x; absent methods are skipped)
    ("create_prompt", "prompt_created"),
    ("create_prompt_version", "prompt_version_created"),
    ("delete_prompt", "prompt_deleted"),
    ("delete_prompt_version", "prompt_version_deleted"),
    ("set_prompt_alias", "prompt_alias_set"),
    ("delete_prompt_alias", "prompt_alias_deleted"),
    ("set_prompt_tag", "prompt_tag_set"),
    ("delete_prompt_tag", "prompt_tag_deleted"),
    ("set_prompt_version_tag", "prompt_version_tag_set"),
    ("delete_prompt_version_tag", "prompt_version_tag_deleted"),
)

# Positional parameter names of the registry store methods (after self), stable across MLflow 2.13-3.x.
_PARAMS = {
    "registered": ("name", "tags", "description", "deployment_job_id"),
    "renamed": ("name", "new_name"),
    "description_updated": ("name", "description", "deployment_job_id"),
    "deleted": ("name",),
    "tag_set": ("name", "tag"),
    "tag_deleted": ("name", "key"),
    "version_created": (
        "name",
        "source",
        "run_id",
        "tags",
        "run_link",
        "description",
        "local_model_path",
        "model_id",
    ),
    "version_description_updated": ("name", "version", "description"),
    "version_deleted": ("name", "version"),
    "alias_set": ("name", "alias", "version"),
    "alias_deleted": ("name", "alias"),
    "stage_transitioned": ("name", "version", "stage"),
    "version_tag_set": ("name", "version", "tag"),
    "version_tag_deleted": ("name", "version", "key"),
    "model_read": ("name",),
    "version_read": ("name", "version"),
    "alias_read": ("name", "alias"),
    "prompt_created": ("name", "description", "tags"),
    "prompt_version_created": ("name", "template", "description", "tags"),
    "prompt_deleted": ("name",),
    "prompt_version_deleted": ("name", "version"),
    "prompt_alias_set": ("name", "alias", "version"),
    "prompt_alias_deleted": ("name", "alias"),
    "prompt_tag_set": ("name", "key", "value"),
    "prompt_tag_deleted": ("name", "key"),
    "prompt_version_tag_set": ("name", "version", "key", "value"),
    "prompt_version_tag_deleted": ("name", "version", "key"),
}
_READS = frozenset({"model_read", "version_read", "alias_read"})
# model actions a prompt also has (mlflow.prompt.<same>); the others (rename, description, stage, status)
# have no prompt event type: on a prompt they announce nothing
_PROMPT_SAME = frozenset(
    {
        "deleted",
        "tag_set",
        "tag_deleted",
        "version_created",
        "version_deleted",
        "alias_set",
        "alias_deleted",
        "version_tag_set",
        "version_tag_deleted",
    }
)
# actions whose result is the version they changed (its number is read from the result first)
_VERSION_RESULTS = frozenset(
    {"version_created", "stage_transitioned", "prompt_version_created", "version_read", "alias_read"}
)
_SETTLED = frozenset({"READY", "FAILED_REGISTRATION"})
_MAX_PENDING = 1000

PROMPT_NAMES = prompts.PromptNames()  # what this process learned of names: prompt or model
_pending: dict[tuple[str, str], str] = {}  # (name, version) -> a status not yet settled (PENDING_REGISTRATION)
_pending_lock = threading.Lock()


def _bind(action: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = dict(zip(_PARAMS.get(action, ("name",)), args, strict=False))
    bound.update(kwargs)
    return bound


def typed_name(action: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The model name as the caller passed it (a rename: the new name, which its result resolves)."""
    call = _bind(action, args, kwargs)
    return str((call.get("new_name") if action == "renamed" else call.get("name")) or "")


def result_name(result: Any) -> str | None:
    """The name a registry call's result carries (a RegisteredModel or ModelVersion), else None."""
    name = getattr(result, "name", None)
    return name if isinstance(name, str) and name else None


def _status(result: Any) -> str | None:
    status = getattr(result, "status", None)
    status = getattr(status, "name", status)  # an enum in some stores, a string in MLflow's entities
    return str(status) if status else None


def _status_change(name: str, version: str | None, status: str | None) -> str | None:
    """The previous status when this result shows a version's unsettled status changed (else None)."""
    if not version or not status:
        return None
    key = (name, version)
    with _pending_lock:
        previous = _pending.get(key)
        if status in _SETTLED:
            _pending.pop(key, None)
        elif previous != status:
            if key not in _pending and len(_pending) >= _MAX_PENDING:
                _pending.pop(next(iter(_pending)))
            _pending[key] = status
    return previous if previous is not None and previous != status else None


def _is_prompt(action: str, call: dict[str, Any], result: Any, names: tuple[str, ...]) -> bool | None:
    """What this call says (and this process learned) of its name; None: nothing at all (taken for a model)."""
    if action.startswith("prompt_"):
        said: bool | None = True
    elif action in ("registered", "version_created"):
        said = prompts.evidence(result, call.get("tags"), call.get("source"))
    elif action in ("tag_set", "version_tag_set") and getattr(call.get("tag"), "key", None) == prompts.IS_PROMPT:
        said = str(getattr(call.get("tag"), "value", "")).lower() == "true"
    else:
        said = prompts.evidence(result)
    if said is not None:
        for name in names:
            PROMPT_NAMES.note(name, said)
        return said
    return next((k for k in map(PROMPT_NAMES.known, names) if k is not None), None)


def describe_registry_call(
    action: str,
    result: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    uc: bool,
    resolve: Callable[[str], str] | None = None,
    ui: Ui = NO_UI,
    is_prompt_name: Callable[[str], bool | None] | None = None,
) -> tuple[str, dict[str, Any]] | None:
    """The event (type, data) for one registry call (name, version, pointers), or None when there is nothing to say.

    ``resolve``: turns a name the caller typed into the registry's full name (used when the result has none).
    ``is_prompt_name``: asked only when neither the call nor this process's earlier results say whether the name
    is a prompt (True/False; None: still unknown, taken for a model). It may raise to defer the description to
    where a lookup is allowed (``prompts.registered_is_prompt`` on the hook's worker).
    """
    call = _bind(action, args, kwargs)
    typed = typed_name(action, args, kwargs)
    name = result_name(result) or typed
    if not name:
        return None
    previous = str(call.get("name") or "") if action == "renamed" else None
    is_prompt = _is_prompt(action, call, result, tuple(dict.fromkeys((name, typed, previous or ""))))
    if resolve is not None and result_name(result) is None and action not in _READS:
        name = resolve(name) or name
        if is_prompt is None:
            is_prompt = PROMPT_NAMES.known(name)
    if is_prompt is None and is_prompt_name is not None and action not in _READS:
        is_prompt = is_prompt_name(name)
        if is_prompt is not None:
            PROMPT_NAMES.note(name, is_prompt)
    version = getattr(result, "version", None) if action in _VERSION_RESULTS else None
    version = str(version if version is not None else call.get("version") or "") or None

    if action in _READS:
        was = _status_change(name, version, _status(result)) if action != "model_read" else None
        if was is None or is_prompt:
            return None
        data = _model_data(name, version, None, uc, ui)
        return "mlflow.model.version_status_changed", {**data, "status": _status(result), "previous_status": was}
    if action in ("deleted", "prompt_deleted"):
        PROMPT_NAMES.forget(name)
    if action == "renamed" and previous:
        PROMPT_NAMES.forget(previous)
    if is_prompt:
        if action.startswith("prompt_"):
            return prompts.describe_prompt(action.removeprefix("prompt_"), name, version, call)
        if action == "registered":
            return prompts.describe_prompt("created", name, None, call)
        return prompts.describe_prompt(action, name, version, call) if action in _PROMPT_SAME else None
    return _describe_model(action, name, version, call, result, uc, ui, previous)


def _model_data(name: str, version: str | None, alias: Any, uc: bool, ui: Ui) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        # UC-ness is the registry's (databricks-uc / uc), never the name's: "a.b.c" on sqlite is not UC
        "catalog_name": name.split(".", 1)[0] if uc and name.count(".") == 2 else None,
        "is_unity_catalog": uc,
        "model_uri": model_uri(name, version, alias),
    }
    if version:
        data["version"] = version
    url = uc_model_url(ui, name, version) if uc else None
    if url:
        data["model_url"] = url
    return data


def _describe_model(
    action: str,
    name: str,
    version: str | None,
    call: dict[str, Any],
    result: Any,
    uc: bool,
    ui: Ui,
    previous: str | None,
) -> tuple[str, dict[str, Any]] | None:
    if action == "description_updated" and call.get("description") is None and call.get("deployment_job_id"):
        return None  # a deployment job linked, the description untouched
    data = _model_data(name, version, call.get("alias"), uc, ui)
    if action == "version_created":
        data["source"] = str(getattr(result, "source", None) or call.get("source") or "")[:1000] or None
        data["run_id"] = getattr(result, "run_id", None) or call.get("run_id")
        data["model_id"] = getattr(result, "model_id", None) or call.get("model_id")
        data["status"] = _status(result)
        _status_change(name, version, data["status"])  # remembered while unsettled
    elif action == "renamed":
        if not previous:
            return None
        data["previous_name"] = previous
    elif action == "version_description_updated":
        action = "description_updated"  # one type; the version says whose
    elif action in ("alias_set", "alias_deleted"):
        data["alias"] = call.get("alias")
    elif action == "stage_transitioned":
        data["stage"] = str(getattr(result, "current_stage", None) or call.get("stage"))
    elif action in ("tag_set", "version_tag_set", "tag_deleted", "version_tag_deleted"):
        tag = call.get("tag")
        key = call.get("key", getattr(tag, "key", None))
        if not isinstance(key, str) or prompts.internal_prompt_tag(key):
            return None
        data["key"] = key
        if action.endswith("tag_set"):
            value = getattr(tag, "value", None)
            data["value"] = "" if value is None else str(value)[:500]  # as the webhook receiver cuts it
    return f"mlflow.model.{action}", data
