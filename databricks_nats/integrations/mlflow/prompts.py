"""Tell prompts from models in registry calls, and describe prompt changes as ``mlflow.prompt.*`` events.

MLflow's prompt registry (2.21+, ``mlflow.genai`` in 3.x) stores a prompt as a registered model tagged
``mlflow.prompt.is_prompt=true`` whose versions hold the template in the ``mlflow.prompt.text`` tag. A prompt
change must never be announced as a model change (a deployer listening for ``mlflow.model.alias_set``
``production`` would deploy a prompt), and the template never leaves the process.

Whether a call is about a prompt is decided from the call itself, never by asking the registry: the store
method (``set_prompt_alias``…), the tags it was given, the tags of its result. A call that carries none of
these (``set_registered_model_alias`` on a name) uses what earlier results in this process said of that name
(``PromptNames``); a name never seen is taken for a model, as it was before prompts existed.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from databricks_nats.integrations.mlflow import _compat

__all__ = [
    "IS_PROMPT",
    "PromptNames",
    "describe_prompt",
    "evidence",
    "internal_prompt_tag",
    "prompt_uri",
    "registered_is_prompt",
    "tag_dict",
    "user_tag",
]

IS_PROMPT = "mlflow.prompt.is_prompt"
# MLflow's own prompt bookkeeping tags (template, type, response format, model config, linked experiments)
_INTERNAL_PREFIXES = ("mlflow.prompt.", "_mlflow_prompt", "_mlflow_experiment_ids")
# the sources MLflow gives prompt versions (CreateModelVersion requires one)
_PROMPT_SOURCES = frozenset({"dummy-source", "prompt-template"})
_VALUE_MAX = 500
MAX_NAMES = 4096


def internal_prompt_tag(key: Any) -> bool:
    """A tag MLflow keeps for its prompt registry: never an event, on a prompt or on a model."""
    return isinstance(key, str) and key.startswith(_INTERNAL_PREFIXES)


def user_tag(key: Any) -> bool:
    """A prompt tag a user set (MLflow's ``mlflow.*`` / ``_mlflow*`` tags are its own)."""
    return isinstance(key, str) and bool(key) and not key.startswith(("mlflow.", "_mlflow"))


def tag_dict(tags: Any) -> dict[str, str]:
    """Tags as MLflow passes them (a mapping, or a list of tag entities) as a dict."""
    if not tags:
        return {}
    if isinstance(tags, Mapping):
        return {str(k): str(v) for k, v in tags.items()}
    found: dict[str, str] = {}
    for tag in tags if isinstance(tags, list | tuple) else ():
        key = getattr(tag, "key", None)
        if isinstance(key, str):
            found[key] = str(getattr(tag, "value", ""))
    return found


def _result_tags(result: Any) -> dict[str, str] | None:
    """All tags of a RegisteredModel / ModelVersion result, MLflow's own included; None: it carries none."""
    tags = _compat.raw_tags(result)
    return tag_dict(tags) if isinstance(tags, Mapping | list | tuple) else None


def evidence(result: Any, call_tags: Any = None, source: Any = None) -> bool | None:
    """What a call's own arguments and result say: True (a prompt), False (a model) or None (nothing)."""
    given = tag_dict(call_tags)
    if given.get(IS_PROMPT, "").lower() == "true" or source in _PROMPT_SOURCES:
        return True
    if result is None or isinstance(result, str | int | bool):
        return None
    tags = _result_tags(result)
    if tags is not None and tags.get(IS_PROMPT, "").lower() == "true":
        return True
    if getattr(result, "source", None) in _PROMPT_SOURCES:
        return True
    # a RegisteredModel or ModelVersion (it has tags and a name) without the prompt tag is a model
    return False if tags is not None and isinstance(getattr(result, "name", None), str) else None


class PromptNames:
    """Names this process learned to be prompts (True) or models (False) from call arguments and results.

    Bounded (the oldest is forgotten first); keyed by name only: the hook does not tell registries apart here.
    """

    def __init__(self, max_names: int = MAX_NAMES) -> None:
        self._names: dict[str, bool] = {}
        self._max = max_names
        self._lock = threading.Lock()

    def note(self, name: str, is_prompt: bool) -> None:
        if not name:
            return
        with self._lock:
            self._names.pop(name, None)
            if len(self._names) >= self._max:
                self._names.pop(next(iter(self._names)))
            self._names[name] = is_prompt

    def known(self, name: str) -> bool | None:
        return self._names.get(name)

    def forget(self, name: str) -> None:
        with self._lock:
            self._names.pop(name, None)

    def clear(self) -> None:
        with self._lock:
            self._names.clear()


def registered_is_prompt(store: Any, name: str) -> bool | None:
    """Ask the registry whether ``name`` is a prompt (one ``get_registered_model`` through ``store``, the store the
    call used). None when it cannot say (deleted, no permission, no network). A remote call: only ever from the
    hook's worker thread, never on an MLflow caller's path."""
    try:
        return evidence(store.get_registered_model(name))
    except Exception:  # noqa: BLE001 - unknown stays unknown (taken for a model)
        return None


def prompt_uri(name: str, version: str | None = None, alias: str | None = None) -> str:
    """``prompts:/<name>/<version>``, ``prompts:/<name>@<alias>`` or ``prompts:/<name>``."""
    if alias:
        return f"prompts:/{name}@{alias}"
    return f"prompts:/{name}/{version}" if version else f"prompts:/{name}"


def describe_prompt(
    action: str, name: str, version: str | None, call: Mapping[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """The ``mlflow.prompt.<action>`` event for a change of prompt ``name`` (None: nothing to announce).

    ``action``: created, deleted, version_created, version_deleted, alias_set, alias_deleted, tag_set,
    tag_deleted, version_tag_set, version_tag_deleted. ``call``: the call's bound arguments; tag calls carry
    ``key``/``value`` (prompt methods) or ``tag`` (a tag entity, model methods). Only user tags are announced.
    """
    alias = call.get("alias") if action in ("alias_set", "alias_deleted") else None
    versioned = action.startswith("version_") or action == "alias_set"
    if versioned and not version:
        return None
    data: dict[str, Any] = {
        "name": name,
        "prompt_uri": prompt_uri(name, version if versioned else None, str(alias) if alias else None),
    }
    if versioned:
        data["version"] = version
    if alias is not None:
        data["alias"] = str(alias)
    if action.endswith(("tag_set", "tag_deleted")):
        tag = call.get("tag")
        key = call.get("key", getattr(tag, "key", None))
        if not user_tag(key):
            return None
        data["key"] = key
        if action.endswith("tag_set"):
            value = call.get("value", getattr(tag, "value", None))
            data["value"] = "" if value is None else str(value)[:_VALUE_MAX]  # as the webhook receiver cuts it
    return f"mlflow.prompt.{action}", data
