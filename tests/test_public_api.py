"""The public surface: exported names, module ``__all__`` hygiene, the error tree, capture(), fail-open emit."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import pkgutil
import types
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import databricks_nats
from databricks_nats import _api, errors
from databricks_nats.errors import DatabricksNatsError, PublishError, SubjectError
from databricks_nats.model import catalog
from databricks_nats.model.events import Event, new_event
from databricks_nats.settings import resolve_settings
from databricks_nats.testing import capture

# The documented core API: must stay exported whatever is added around it.
CORE_API = {
    "configure", "emit", "publish", "flush", "stats", "shutdown", "get_settings", "ensure_stream",
    "Event", "FlushResult", "Settings", "Secret", "__version__",
    "DatabricksNatsError", "ConfigurationError", "SubjectError", "PublishError", "FlushTimeout",
    "StreamError", "StreamMismatch", "WaitTimeout", "subscribe", "wait_for", "autolog",
    "Client", "current_client", "emit_many",
}  # fmt: skip

# Third-party packages behind the optional extras; an integration needing a missing one is skipped.
EXTRAS = {"mlflow", "pyspark", "databricks", "airflow", "prefect", "py4j"}


def test_package_all_is_exactly_the_public_namespace() -> None:
    """databricks_nats.__all__ lists every public non-module name of the package, and nothing else."""
    exported = set(databricks_nats.__all__)
    assert len(exported) == len(databricks_nats.__all__), "duplicates in __all__"
    public = {
        name
        for name in dir(databricks_nats)  # the package imports its names lazily (PEP 562)
        if not name.startswith("_") and not isinstance(getattr(databricks_nats, name), types.ModuleType)
    } - {"annotations"}  # ``from __future__ import annotations``
    assert exported - {"__version__"} == public
    assert exported >= CORE_API


def test_every_exported_name_resolves() -> None:
    """Every name in databricks_nats.__all__ is an attribute of the package and star-import yields exactly them."""
    for name in databricks_nats.__all__:
        assert getattr(databricks_nats, name) is not None, name
    namespace: dict[str, Any] = {}
    exec("from databricks_nats import *", namespace)  # noqa: S102 - a fixed statement, the point of the test
    assert set(namespace) - {"__builtins__"} == set(databricks_nats.__all__)
    assert databricks_nats.publish is not databricks_nats.emit  # the deprecated alias warns (tests/test_client.py)
    assert isinstance(databricks_nats.__version__, str)
    assert databricks_nats.__version__


def _module_names() -> list[str]:
    names = ["databricks_nats"]
    for info in pkgutil.walk_packages(databricks_nats.__path__, "databricks_nats.", onerror=lambda _name: None):
        names.append(info.name)
    return sorted(names)


MODULES = _module_names()
# Modules that have no __all__ yet (reported); remove a name here once its module gains one.
MISSING_ALL: set[str] = set()  # fmt: skip


# The public modules that are thin surfaces over an integration (and so need its extra).
SURFACES = {
    "databricks_nats.airflow",
    "databricks_nats.auth_service",
    "databricks_nats.prefect",
    "databricks_nats.spark",
}


@contextlib.contextmanager
def _optional(name: str) -> Iterator[None]:
    """Skip (with the reason) when an integration module needs an extra that is not installed here."""
    try:
        yield
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if (name.startswith("databricks_nats.integrations.") or name in SURFACES) and missing in EXTRAS:
            pytest.skip(f"{name} needs the optional dependency {missing!r}")
        raise


def _import_or_skip(name: str) -> types.ModuleType:
    with _optional(name):
        return importlib.import_module(name)
    raise AssertionError("unreachable")


def test_module_walk_found_the_core_modules() -> None:
    """The module walk sees the core modules, so the per-module checks below really cover them."""
    for name in ("databricks_nats.errors", "databricks_nats.settings", "databricks_nats.testing",
                 "databricks_nats.model.events", "databricks_nats.model.subjects", "databricks_nats.model.catalog",
                 "databricks_nats.transport.publisher"):  # fmt: skip
        assert name in MODULES


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="module has no __all__ (reported)"))
        if n in MISSING_ALL
        else n
        for n in MODULES
    ],
)
def test_every_module_defines_all_and_its_names_exist(name: str) -> None:
    """Each databricks_nats module declares __all__ as a list of unique strings that all resolve in it."""
    module = _import_or_skip(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    declared = module.__all__
    assert isinstance(declared, (list, tuple))
    assert all(isinstance(n, str) for n in declared)
    assert len(set(declared)) == len(declared), f"duplicates in {name}.__all__"
    for attr in declared:
        with _optional(name):  # lazy packages import the defining module on first access
            assert hasattr(module, attr), f"{name}.__all__ names {attr!r}, which does not exist"


def _error_tree() -> dict[str, str | None]:
    """Parse the errors module docstring's drawn tree into {class name: parent name}."""
    doc = errors.__doc__ or ""
    lines = doc.splitlines()
    root_line = next(i for i, line in enumerate(lines) if line.strip() == "DatabricksNatsError")
    indent = len(lines[root_line]) - len(lines[root_line].lstrip())
    parents: dict[str, str | None] = {"DatabricksNatsError": None}
    stack = ["DatabricksNatsError"]
    for line in lines[root_line + 1 :]:
        if "── " not in line:
            break
        branch = line.index("── ") - 1
        depth = (branch - indent) // 4 + 1
        name = line[branch + 3 :].split()[0]
        del stack[depth:]
        parents[name] = stack[-1]
        stack.append(name)
    return parents


def test_errors_docstring_draws_the_actual_class_tree() -> None:
    """The tree in the errors module docstring names every exported error with its real parent class (the errors
    defined next to their integration, drawn too, are checked by tests/test_error_tree.py)."""
    tree = _error_tree()
    assert set(errors.__all__) <= set(tree)
    for name, parent in tree.items():
        if name not in errors.__all__:
            assert parent == "DatabricksNatsError", name
            continue
        cls = getattr(errors, name)
        if parent is None:
            assert cls is DatabricksNatsError
            continue
        own_bases = [b for b in cls.__bases__ if issubclass(b, DatabricksNatsError)]
        assert own_bases == [getattr(errors, parent)], (name, own_bases, parent)


def test_every_error_derives_from_the_root_and_is_exported() -> None:
    """Every exception class in the errors module derives from DatabricksNatsError, is exported and is documented."""
    defined = {n for n, v in vars(errors).items() if inspect.isclass(v) and issubclass(v, BaseException)}
    assert defined == set(errors.__all__)
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, DatabricksNatsError)
        assert name in (errors.__doc__ or "")
        assert getattr(databricks_nats, name) is cls
        assert cls.__doc__


def _run_data(**extra: Any) -> dict[str, Any]:
    return {"experiment_id": "7", "run_id": "r1", "run_name": "churn", "run_url": None, "artifact_uri": None, **extra}


def test_capture_records_emitted_events_with_subject_and_envelope() -> None:
    """testing.capture() keeps each emitted event with the subject and envelope it would be sent with."""
    with capture(workspace="1234", env="prod") as captured:
        event = databricks_nats.emit("mlflow.run.started", _run_data(user="ana"))
        custom = databricks_nats.emit("myteam.features.refreshed", {"table": "main.features.users"}, keys=["users"])
    assert isinstance(event, Event)
    assert isinstance(custom, Event)
    assert captured.types() == ["mlflow.run.started", "myteam.features.refreshed"]
    first, second = captured
    assert first.subject == "dbx.1234.prod.mlflow.run.7.r1.started"
    assert first.envelope["id"] == event.id
    assert first.envelope["subject"] == first.subject
    assert first.envelope["type"] == "databricks.mlflow.run.started"
    assert first.data["user"] == "ana"
    assert first.data["context"]["workspace"] == "1234"
    Draft202012Validator(catalog.envelope_schema()).validate(first.envelope)
    Draft202012Validator(catalog.lookup("mlflow.run.started").schema()).validate(first.data)
    assert second.subject == "dbx.1234.prod.myteam.features.users.refreshed"
    assert captured.of_type("myteam.features.refreshed") == [second]
    assert captured.stats()["emitted"] == 2
    assert captured.flush().ok


def test_capture_restores_the_previous_transport() -> None:
    """Leaving capture() puts back whatever transport was active before it (none here)."""
    assert _api._transport is None
    with capture() as outer:
        with capture() as inner:
            databricks_nats.emit("custom.nested.capture", {}, keys=["k"])
        databricks_nats.emit("custom.outer.capture", {}, keys=["k"])
    assert _api._transport is None
    assert inner.types() == ["custom.nested.capture"]
    assert outer.types() == ["custom.outer.capture"]


MALFORMED = ["bad", "a..b", "a.b.c d", "a.b", "a.*.c", "a.b.>", "", ".a.b", "a.b.c."]


@pytest.mark.parametrize("bad", MALFORMED)
def test_emit_with_malformed_type_returns_none_without_raising(bad: str, caplog: pytest.LogCaptureFixture) -> None:
    """By default emit() of a malformed type logs a warning and returns None instead of raising."""
    with caplog.at_level(logging.WARNING, logger="databricks_nats"), capture() as captured:
        assert databricks_nats.emit(bad, {"x": 1}) is None
    assert list(captured) == []
    assert any("emit" in r.getMessage() for r in caplog.records)


def test_emit_with_malformed_type_without_any_transport_does_not_start_a_publisher() -> None:
    """A malformed type is refused before any publisher (or connection) is created."""
    assert databricks_nats.emit("a..b", {}) is None
    assert _api._transport is None


@pytest.mark.parametrize("bad", MALFORMED)
def test_emit_with_malformed_type_raises_in_strict_mode(bad: str) -> None:
    """With strict=True emit() of a malformed type raises a DatabricksNatsError (SubjectError)."""
    with capture(strict=True) as captured, pytest.raises(SubjectError):
        databricks_nats.emit(bad, {"x": 1})
    assert list(captured) == []


@pytest.mark.parametrize("bad_data", [["a", "b"], "text", 42, ("k", "v"), {"a", "b"}])
def test_emit_with_non_mapping_data_is_refused(bad_data: Any) -> None:
    """Non-mapping data returns None by default and raises a DatabricksNatsError in strict mode."""
    with capture() as captured:
        assert databricks_nats.emit("custom.data.check", bad_data, keys=["k"]) is None
    assert list(captured) == []
    with capture(strict=True) as captured, pytest.raises(DatabricksNatsError) as info:
        databricks_nats.emit("custom.data.check", bad_data, keys=["k"])
    assert isinstance(info.value, PublishError)
    assert list(captured) == []


def test_emit_without_data_sends_an_empty_payload() -> None:
    """emit() with no data sends an event whose data carries only the context."""
    with capture() as captured:
        assert databricks_nats.emit("custom.no.data", keys=["k"]) is not None
    assert set(captured[0].data) == {"context"}


def test_disabled_setting_gives_a_noop_publisher(tmp_path: Any) -> None:
    """DATABRICKS_NATS_DISABLED=true builds a publisher that discards events, counts them, and touches no disk."""
    spool = tmp_path / "spool"
    settings = resolve_settings(
        environ={"DATABRICKS_NATS_DISABLED": "true", "DATABRICKS_NATS_SPOOL_DIR": str(spool)}, spark_conf={}
    )
    assert settings.disabled is True
    transport = _api.build_transport(settings)
    for i in range(5):
        transport.emit(new_event("custom.disabled.test", {"i": i}, keys=["k"]))
    stats = transport.stats()
    assert stats["disabled"] is True
    assert stats["emitted"] == 5
    assert stats["dropped"] == {"disabled": 5}
    assert stats["pending"] == 0
    assert transport.flush(1.0).ok
    assert transport.close(1.0).ok
    assert not spool.exists()


def test_disabled_by_environment_makes_the_global_api_a_noop(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """With DATABRICKS_NATS_DISABLED set, the module-level emit/flush/stats work without any server."""
    monkeypatch.setenv("DATABRICKS_NATS_DISABLED", "true")
    monkeypatch.setenv("DATABRICKS_NATS_SPOOL_DIR", str(tmp_path / "spool"))
    event = databricks_nats.emit("custom.disabled.global", {"a": 1}, keys=["k"])
    assert isinstance(event, Event)
    assert databricks_nats.flush(1.0).ok
    stats = databricks_nats.stats()
    assert stats["disabled"] is True
    assert stats["emitted"] == 1
    assert databricks_nats.shutdown(1.0).ok
    assert not (tmp_path / "spool").exists()


def test_repeated_failures_warn_once_with_user_strings_clipped(caplog: pytest.LogCaptureFixture) -> None:
    """A loop emitting bad input logs one bounded warning; the repeats go to debug, each with its running count."""
    long_type = "a..b" + "x" * 10_000
    with caplog.at_level(logging.DEBUG, logger="databricks_nats"), capture():
        for _ in range(50):
            assert databricks_nats.emit(long_type, {}) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "emit" in r.getMessage()]
    assert len(warnings) == 1
    assert len(warnings[0].getMessage()) < 1000
    repeats = [r for r in caplog.records if r.levelno == logging.DEBUG and "times so far" in r.getMessage()]
    assert len(repeats) == 49
    assert "(50 times so far)" in repeats[-1].getMessage()
