"""Every touch of MLflow internals, in one place (MLflow 2.13 - 3.x).

We hook the three registries MLflow hands stores out of, on their *instances*:

* ``mlflow.tracking._tracking_service.utils._tracking_store_registry.get_store``
* ``mlflow.tracking._model_registry.utils._get_store_registry().get_store``
* ``mlflow.store.artifact.artifact_repository_registry._artifact_repository_registry.get_artifact_repository``

Each store or repository they return is wrapped once, by setting attributes on the instance (so
``isinstance`` checks keep working and cached instances are reused); ``uninstall`` takes them off again.
A wrapper is a method of its instance (``__self__``, ``__func__``, ``__wrapped__``, the original signature) that
looks the original up at call time (``method_target``): a class-level patch made after installation (a test's
``mock.patch.object(SqlAlchemyStore, "log_param")``) is what it calls. Wrapper frames set
``__tracebackhide__`` (pytest and IPython leave such frames out of the tracebacks they show).
The tracking store's async logging queue captured the unwrapped ``log_batch`` at construction: we point
``_logging_func`` at the wrapper (and back). The per-run artifact repository cache is cleared so
repositories made before installation get wrapped.
If MLflow moves any of this, ``install`` raises ``MlflowCompatError`` naming what is missing.
"""

from __future__ import annotations

import contextlib
import functools
import types
import weakref
from collections.abc import Callable
from typing import Any

from databricks_nats.errors import DatabricksNatsError

__all__ = [
    "MlflowCompatError",
    "evaluation_run_id",
    "install",
    "install_method",
    "is_unity_catalog_registry",
    "mark",
    "method_target",
    "mlflow_version",
    "patch",
    "raw_tags",
    "rebind_async_queue",
    "repo_tracking_uri",
    "tracking_store",
    "uninstall",
]

_MARK = "_databricks_nats_wrapped"
_installed: list[tuple[Any, str, Any]] = []  # (object, attribute, original) to restore
_wrapped: weakref.WeakSet[Any] = weakref.WeakSet()  # instances carrying our wrappers
_MISSING = object()


class MlflowCompatError(DatabricksNatsError):
    """This MLflow version does not expose what the hook needs (the message names it)."""


def mlflow_version() -> tuple[int, int]:
    import mlflow

    major, minor = (int(x) for x in mlflow.__version__.split(".")[:2])
    return major, minor


def _require(module: str, attr: str) -> Any:
    import importlib

    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        import mlflow

        raise MlflowCompatError(
            f"MLflow {mlflow.__version__} has no {module}.{attr}; databricks-nats supports MLflow 2.13-3.x "
            "(please report this version)"
        ) from e


def _hook(obj: Any, attr: str, wrap: Callable[[Any], Any]) -> None:
    original = getattr(obj, attr)

    last: list[Any] = [None]  # the object handed out last, already wrapped: the common case costs one `is`

    @functools.wraps(original)  # keeps the signature: MLflow inspects builder signatures
    def hooked(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        handed = original(*args, **kwargs)
        if handed is not last[0]:
            last[0] = wrap(handed)
        return handed

    setattr(obj, attr, hooked)
    _installed.append((obj, attr, original))


def install(
    wrap_tracking: Callable[[Any], Any], wrap_registry: Callable[[Any], Any], wrap_artifacts: Callable[[Any], Any]
) -> None:
    """Hook the three registries; stores built from now on (and cached ones, when next handed out) get wrapped."""
    if _installed:
        return
    if mlflow_version() < (2, 13):
        raise MlflowCompatError("databricks-nats needs MLflow >= 2.13")
    tracking = _require("mlflow.tracking._tracking_service.utils", "_tracking_store_registry")
    _require("mlflow.tracking._model_registry.utils", "_get_store_registry")
    artifacts = _require("mlflow.store.artifact.artifact_repository_registry", "_artifact_repository_registry")
    repo_cache = _require("mlflow.tracking._tracking_service.utils", "_artifact_repos_cache")
    _hook(tracking, "get_store", wrap_tracking)
    _hook_registry_lazily(wrap_registry)
    _hook(artifacts, "get_artifact_repository", wrap_artifacts)
    repo_cache.clear()


def _hook_registry_lazily(wrap_registry: Callable[[Any], Any]) -> None:
    """Hook the model registry's store registry when MLflow first asks for it.

    ``_get_store_registry()`` builds the registry on first call, importing the Unity Catalog stores: doing
    that from the zero-code entry point, while ``import mlflow`` is still running, is what we must not do.
    """
    import importlib

    utils: Any = importlib.import_module("mlflow.tracking._model_registry.utils")
    original = utils._get_store_registry
    hooked: list[Any] = []

    @functools.wraps(original)
    def get_store_registry(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        registry = original(*args, **kwargs)
        if not hooked or hooked[0] is not registry:
            hooked[:] = [registry]
            _hook(registry, "get_store", wrap_registry)
        return registry

    utils._get_store_registry = get_store_registry
    _installed.append((utils, "_get_store_registry", original))


def uninstall() -> None:
    """Restore the registries' methods and take our wrappers off every store and repository they handed out."""
    while _installed:
        obj, attr, original = _installed.pop()
        setattr(obj, attr, original)
    for obj in list(_wrapped):
        for name, own in obj.__dict__.pop(_MARK, {}).items():
            if own is _MISSING:
                obj.__dict__.pop(name, None)
            else:
                setattr(obj, name, own)
        rebind_async_queue(obj)
    _wrapped.clear()


def mark(obj: Any) -> bool:
    """Mark an instance as wrapped; return False when it already was."""
    if _MARK in getattr(obj, "__dict__", {}):
        return False
    obj.__dict__[_MARK] = {}
    with contextlib.suppress(TypeError):  # not weak-referenceable: keeps its wrappers, quiet once disabled
        _wrapped.add(obj)
    return True


def patch(obj: Any, name: str, wrapper: Any) -> None:
    """Set ``wrapper`` as ``obj.name`` on the instance, remembering what ``uninstall`` restores."""
    saved = obj.__dict__.setdefault(_MARK, {})
    saved.setdefault(name, obj.__dict__.get(name, _MISSING))
    setattr(obj, name, wrapper)


def _class_attribute(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        raw = klass.__dict__.get(name, _MISSING)
        if raw is not _MISSING:
            return raw
    return _MISSING


def method_target(obj: Any, name: str) -> tuple[Callable[[Any], Any], Any] | None:
    """``(target, original)`` for wrapping ``obj.name``, or None when there is no such attribute.

    ``target(obj)`` gives, at call time, what ``obj.name`` would be without our wrapper: an instance attribute set
    before wrapping, else the class attribute as it is *now* (bound through the descriptor protocol, as attribute
    access binds it; a ``MagicMock`` patched onto the class is returned as is). ``original`` is what the wrapper
    takes its name, docstring and signature from.
    """
    own = obj.__dict__.get(name, _MISSING) if hasattr(obj, "__dict__") else _MISSING
    if own is not _MISSING:
        return (lambda _obj: own), getattr(own, "__func__", own)
    cls = type(obj)
    first = _class_attribute(cls, name)
    if first is _MISSING:
        return None
    if isinstance(first, staticmethod):  # nothing to bind (getattr on the class gives the plain function)
        return (lambda self: getattr(type(self), name)), first.__func__

    def target(self: Any) -> Any:
        raw = getattr(type(self), name)  # the class attribute now: a patch made after wrapping included
        if type(raw) is types.FunctionType:  # the common case, bound as attribute access would bind it
            return types.MethodType(raw, self)
        get = getattr(type(raw), "__get__", None)  # a MagicMock has none: called as is, as access would give it
        return raw if get is None else get(raw, self, type(self))

    return target, getattr(first, "__func__", first)


def install_method(obj: Any, name: str, func: Callable[..., Any], original: Any) -> None:
    """Set ``func`` (taking the instance first) as ``obj.name``, a method bound to ``obj``; ``uninstall`` restores.

    ``func`` takes ``original``'s name, docstring and ``__wrapped__`` (MLflow inspects ``create_model_version``'s
    signature). A plain function set on the instance before us stays a plain function.
    """
    functools.update_wrapper(func, original)
    own = obj.__dict__.get(name, _MISSING)
    plain = own is not _MISSING and not isinstance(own, types.MethodType)
    patch(obj, name, functools.partial(func, obj) if plain else types.MethodType(func, obj))


def rebind_async_queue(store: Any) -> None:
    """Point the store's async logging queue at the (wrapped) ``log_batch`` it captured unwrapped."""
    queue = getattr(store, "_async_logging_queue", None)
    if queue is not None and hasattr(queue, "_logging_func"):
        queue._logging_func = store.log_batch


def is_delegating_repo(repo: Any) -> bool:
    """``runs:/`` and ``models:/`` repositories delegate to a real repository the registry also hands out."""
    return type(repo).__name__ in {
        "RunsArtifactRepository",
        "ModelsArtifactRepository",
        "UnityCatalogModelsArtifactRepository",
    }


def is_unity_catalog_registry(store: Any) -> bool:
    """Whether a registry store is a Unity Catalog one: what ``databricks-uc`` (or OSS ``uc``) registry URIs build.

    MLflow 2.x registers ``UcModelRegistryStore`` itself, 3.x a builder choosing it or ``UcNativeModelRegistryStore``;
    all of them (and ``UnityCatalogOssStore``) live under ``mlflow.store._unity_catalog``.
    """
    return any(str(cls.__module__).startswith("mlflow.store._unity_catalog.") for cls in type(store).__mro__)


def run_status_name(status: Any) -> str:
    """MLflow passes run status as the RunStatus enum int; return its name (FINISHED, FAILED, KILLED…)."""
    if isinstance(status, str):
        return status
    from mlflow.entities import RunStatus

    return str(RunStatus.to_string(status))


def spark_set_run_property(run_id: str | None) -> None:
    """Let Spark listeners name the active MLflow run (only when PySpark is already imported)."""
    import sys

    if "pyspark.sql" not in sys.modules:
        return
    from databricks_nats.integrations.spark.runs import set_active_run

    set_active_run(run_id)


def repo_tracking_uri(repo: Any) -> str | None:
    """The tracking URI an artifact repository was made for (MLflow 3 passes it; 2.x does not: None)."""
    uri = getattr(repo, "tracking_uri", None)
    return uri if isinstance(uri, str) and uri else None


def tracking_store(uri: str | None = None) -> Any:
    """The tracking store MLflow builds (and caches) for ``uri`` (default: the current tracking URI, what
    ``mlflow.evaluate`` logged to): the same one a client bound to it uses."""
    from mlflow.tracking._tracking_service import utils

    return utils._get_store(uri)  # type: ignore[no-untyped-call]


def store_uri(store: Any) -> str | None:
    """The URI a tracking or registry store was built for (``databricks``, ``databricks-uc://p``, ``http://…``).

    REST stores hold ``functools.partial(get_*_host_creds, store_uri)`` as ``get_host_creds`` (MLflow 2.13-3.x);
    Unity Catalog stores also keep ``store_uri``. Unknown: None (the caller falls back to the current URI).
    """
    own = store.__dict__ if hasattr(store, "__dict__") else {}
    for attr in ("store_uri", "db_uri"):  # UC stores; SqlAlchemyStore (sqlite://…, no UI)
        uri = own.get(attr)
        if isinstance(uri, str) and uri:
            return uri
    creds = getattr(store, "get_host_creds", None)
    if isinstance(creds, functools.partial) and creds.args and isinstance(creds.args[0], str):
        return creds.args[0]
    return None


def current_tracking_uri() -> str | None:
    """The tracking URI in effect (``mlflow.get_tracking_uri()``); None when it cannot be read."""
    try:
        import mlflow

        return str(mlflow.get_tracking_uri())
    except Exception:  # noqa: BLE001 - a URL is a nicety
        return None


def registered_model_name(store: Any, name: str) -> str:
    """The registry's own name for ``name``: ``store.get_registered_model(name).name``.

    On Unity Catalog this is the three-level name the registry resolves a short name to (MLflow applies the
    Spark session's current catalog/schema client-side when there is one, else the server resolves it).
    """
    return str(store.get_registered_model(name).name)


def raw_tags(result: Any) -> Any:
    """The tags of a RegisteredModel / ModelVersion result, MLflow's own included: MLflow 3's ``tags`` property
    hides ``mlflow.prompt.is_prompt``, ``_tags`` holds it. None when the result has neither."""
    for attr in ("_tags", "tags"):
        tags = getattr(result, attr, None)
        if tags is not None:
            return tags
    return None


def evaluation_run_id(result: Any) -> Any:
    """The run of an EvaluationResult: MLflow 2's has no ``run_id`` property, only ``_run_id``."""
    return getattr(result, "run_id", None) or getattr(result, "_run_id", None)
