"""Every integration's settings section, imported (and so registered with ``databricks_nats.settings``) at once.

The package root imports this module, so any ``import databricks_nats…`` has every section registered before
settings are resolved, built or unpickled. Each section module is standard library only: no MLflow, no PySpark.

The Spark section's package (``integrations.spark``) imports the listeners, and so PySpark, when it is
imported: until it exports them lazily, its section module is loaded here on its own, under its own name
(``_load``), without running the package's ``__init__``. Importing the package later finds it in
``sys.modules``: one module, one class.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

from databricks_nats.integrations.mlflow.settings import MlflowSettings
from databricks_nats.telemetry_settings import TelemetrySettings

__all__ = ["SECTIONS", "MlflowSettings", "SparkSettings", "TelemetrySettings"]


def _load(name: str) -> ModuleType:
    """The module ``name`` (a section module), imported without its package when that is not imported yet."""
    package = name.rpartition(".")[0]
    if name in sys.modules or package in sys.modules:
        return importlib.import_module(name)
    path = os.path.join(os.path.dirname(__file__), *name.split(".")[2:]) + ".py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships with the package
        return importlib.import_module(name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


SparkSettings = _load("databricks_nats.integrations.spark.settings").SparkSettings

SECTIONS: tuple[type, ...] = (MlflowSettings, SparkSettings, TelemetrySettings)
