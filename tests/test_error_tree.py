"""Every exception class the package defines is in the tree under ``DatabricksNatsError``.

The walk imports every module of ``databricks_nats`` (pkgutil); a module whose optional third-party
dependency is not installed here (Airflow, Prefect: they have venvs of their own) is skipped, saying which.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import pytest

import databricks_nats
from databricks_nats.errors import DatabricksNatsError


def _module_names() -> list[str]:
    found = pkgutil.walk_packages(databricks_nats.__path__, "databricks_nats.", onerror=lambda _name: None)
    return sorted({"databricks_nats", *(info.name for info in found)})


MODULES = _module_names()


def _import(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing = (e.name or "").split(".")[0]
        if not missing or missing == "databricks_nats":
            raise
        pytest.skip(f"{name} needs the optional dependency {missing!r}, not installed here")


def _exceptions_defined_in(module: types.ModuleType) -> list[type[BaseException]]:
    """Read from the module's namespace, so a package's lazy exports are not imported here."""
    return [
        cls
        for cls in list(vars(module).values())
        if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == module.__name__
    ]


def test_the_walk_sees_every_layer() -> None:
    for name in (
        "databricks_nats.errors",
        "databricks_nats.model.catalog",
        "databricks_nats.model.jsonsafe",
        "databricks_nats.transport.errors",
        "databricks_nats.consumer",
        "databricks_nats.integrations.mlflow._compat",
        "databricks_nats.integrations.prefect.deployments",
        "databricks_nats.integrations.airflow.triggers",
    ):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_every_exception_class_derives_from_the_root(name: str) -> None:
    module = _import(name)
    outside = [cls.__qualname__ for cls in _exceptions_defined_in(module) if not issubclass(cls, DatabricksNatsError)]
    assert not outside, f"{name} defines exceptions outside DatabricksNatsError: {outside}"


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("databricks_nats.integrations.mlflow._compat", "MlflowCompatError"),
        ("databricks_nats.integrations.prefect.deployments", "ParameterError"),
    ],
)
def test_the_integration_errors_are_in_the_tree(name: str, error: str) -> None:
    """The two that once were outside it; Prefect's module imports without Prefect installed."""
    assert issubclass(getattr(_import(name), error), DatabricksNatsError)


def test_the_tree_itself() -> None:
    from databricks_nats import errors

    for cls in _exceptions_defined_in(errors):
        assert issubclass(cls, DatabricksNatsError)
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} is missing from the tree in errors.py"
