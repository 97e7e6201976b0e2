"""Describe a successful model registry store call as the data of a ``mlflow.model.*`` event.

On Unity Catalog the name in an event is always the three-level name the registry resolved: taken from the
call's result when it carries one (``registered``, ``version_created``), else from ``resolve`` (the hook's
once-per-name lookup), so one model has one subject whatever the caller typed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from databricks_nats.integrations.mlflow.urls import NO_UI, Ui, model_uri, uc_model_url

__all__ = ["CALLS", "describe_registry_call", "result_name", "typed_name"]

# (registry store method, action): the calls the hook wraps; describe_registry_call says what each one was.
CALLS: tuple[tuple[str, str], ...] = (
    ("create_registered_model", "registered"),
    ("delete_registered_model", "deleted"),
    ("create_model_version", "version_created"),
    ("delete_model_version", "version_deleted"),
    ("set_registered_model_alias", "alias_set"),
    ("delete_registered_model_alias", "alias_deleted"),
    ("transition_model_version_stage", "stage_transitioned"),
    ("set_model_version_tag", "version_tag_set"),
)

# Positional parameter names of the registry store methods (after self), stable across MLflow 2.13-3.x.
_PARAMS = {
    "registered": ("name",),
    "deleted": ("name",),
    "version_created": ("name", "source", "run_id"),
    "version_deleted": ("name", "version"),
    "alias_set": ("name", "alias", "version"),
    "alias_deleted": ("name", "alias"),
    "stage_transitioned": ("name", "version", "stage"),
    "version_tag_set": ("name", "version", "tag"),
}


def _bind(action: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = dict(zip(_PARAMS[action], args, strict=False))
    bound.update(kwargs)
    return bound


def typed_name(action: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The model name as the caller passed it."""
    return str(_bind(action, args, kwargs).get("name") or "")


def result_name(result: Any) -> str | None:
    """The name a registry call's result carries (a RegisteredModel or ModelVersion), else None."""
    name = getattr(result, "name", None)
    return name if isinstance(name, str) and name else None


def describe_registry_call(
    action: str,
    result: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    uc: bool,
    resolve: Callable[[str], str] | None = None,
    ui: Ui = NO_UI,
) -> tuple[str, dict[str, Any]] | None:
    """The event (type, data) for one registry call (name, version, pointers), or None when there is nothing to say.

    ``resolve``: turns a name the caller typed into the registry's full name (used when the result has none).
    """
    call = _bind(action, args, kwargs)
    name = result_name(result) or str(call.get("name") or "")
    if not name:
        return None
    if resolve is not None and result_name(result) is None:
        name = resolve(name) or name
    version = getattr(result, "version", None) if action in ("version_created", "stage_transitioned") else None
    version = str(version if version is not None else call.get("version") or "") or None
    data: dict[str, Any] = {
        "name": name,
        # UC-ness is the registry's (databricks-uc / uc), never the name's: "a.b.c" on sqlite is not UC
        "catalog_name": name.split(".", 1)[0] if uc and name.count(".") == 2 else None,
        "is_unity_catalog": uc,
        "model_uri": model_uri(name, version, call.get("alias")),
    }
    if version:
        data["version"] = version
    url = uc_model_url(ui, name, version) if uc else None
    if url:
        data["model_url"] = url
    if action == "version_created":
        data["source"] = str(getattr(result, "source", None) or call.get("source") or "")[:1000] or None
        data["run_id"] = getattr(result, "run_id", None) or call.get("run_id")
        data["model_id"] = getattr(result, "model_id", None) or call.get("model_id")
    elif action in ("alias_set", "alias_deleted"):
        data["alias"] = call.get("alias")
    elif action == "stage_transitioned":
        data["stage"] = str(getattr(result, "current_stage", None) or call.get("stage"))
    elif action == "version_tag_set":
        tag = call.get("tag")
        data["key"] = getattr(tag, "key", None)
        data["value"] = str(getattr(tag, "value", ""))[:500]
    return f"mlflow.model.{action}", data
