"""Where a setting's raw value comes from, highest precedence first: arguments, ``DATABRICKS_NATS_*``, the
settings file, the active Spark session's conf (``spark.databricks_nats.<name>``).

``settings.py`` owns what the settings are (their fields, parsers and sections) and passes the known names
in; this module only looks values up and names where each came from. Standard library, plus PySpark's public
API when PySpark is already imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from databricks_nats import config_file
from databricks_nats.errors import ConfigurationError

__all__ = ["ENV_PREFIX", "SPARK_PREFIX", "origin_name", "settings_file", "sources", "spark_conf"]

ENV_PREFIX = "DATABRICKS_NATS_"
SPARK_PREFIX = "spark.databricks_nats."


def spark_conf(names: Iterable[str]) -> Mapping[str, str]:
    """Our keys from the active Spark session's conf, only if PySpark is already imported."""
    if "pyspark.sql" not in sys.modules:
        return {}
    try:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is None:
            return {}
        out = {}
        for name in names:
            value = spark.conf.get(SPARK_PREFIX + name, None)
            if value is not None:
                out[name] = value
        return out
    except Exception:  # noqa: BLE001 - a broken or stopped session must not stop configuration
        return {}


def settings_file(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(path, how it was found) of the settings file in effect, or None (see ``config_file``)."""
    return config_file.find(environ)


def _file_values(path: str, known: Iterable[str]) -> dict[str, Any]:
    """The settings of a settings file; unknown keys and unreadable files are ConfigurationErrors."""
    values = config_file.load(path)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigurationError("config", f"{path}: unknown setting {unknown[0]!r}; known: {', '.join(known)}")
    return values


def sources(
    environ: Mapping[str, str] | None,
    conf: Mapping[str, str] | None,
    kwargs: Mapping[str, Any],
    known: list[str],
) -> list[tuple[str, Callable[[str], Any]]]:
    """The raw value of each setting from each source, highest precedence first: (origin, lookup)."""
    environ = os.environ if environ is None else environ
    unknown = set(kwargs) - set(known)
    if unknown:
        raise ConfigurationError(sorted(unknown)[0], f"unknown setting; known: {', '.join(sorted(known))}")
    found = settings_file(environ)
    file_values = _file_values(found[0], known) if found else {}
    conf = spark_conf(known) if conf is None else conf
    return [
        ("argument", lambda n: kwargs.get(n)),
        ("environment", lambda n: environ.get(ENV_PREFIX + n.upper())),
        (f"file {found[0]}" if found else "file", lambda n: file_values.get(n)),
        ("spark conf", lambda n: conf.get(n)),
    ]


def origin_name(origin: str, name: str) -> str:
    """How to name where a value came from in an error: ``argument url``, ``DATABRICKS_NATS_URL``…"""
    return {"argument": f"argument {name}", "environment": ENV_PREFIX + name.upper()}.get(
        origin, SPARK_PREFIX + name if origin == "spark conf" else f"{origin} ({name})"
    )
