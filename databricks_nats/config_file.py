"""The settings file: where it is found and what it holds (TOML, flat keys named like the settings).

Serverless compute has no cluster environment variables, so a file named by a job parameter is where it gets
its settings. Looked for in this order: ``DATABRICKS_NATS_CONFIG``; the job parameter ``nats_config`` (a
notebook widget or a ``--nats_config=PATH`` argument); ``./databricks-nats.toml``;
``~/.config/databricks-nats/config.toml``. Standard library only (the MLflow entry point asks during
``import mlflow``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from databricks_nats.errors import ConfigurationError

__all__ = ["CONFIG_ENV", "CONFIG_LOCATIONS", "CONFIG_PARAMETER", "find", "load"]

CONFIG_ENV = "DATABRICKS_NATS_CONFIG"
CONFIG_PARAMETER = "nats_config"  # the job parameter (notebook widget or --nats_config=PATH) naming the file
CONFIG_LOCATIONS = ("databricks-nats.toml", "~/.config/databricks-nats/config.toml")


def find(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(absolute path, how it was found) of the settings file in effect, or None.

    A file named explicitly (variable or job parameter) must exist, else ConfigurationError.
    """
    from databricks_nats.jobparams import job_parameters

    environ = os.environ if environ is None else environ
    named = [(environ.get(CONFIG_ENV), CONFIG_ENV), (job_parameters([CONFIG_PARAMETER]).get(CONFIG_PARAMETER), "")]
    for path, origin in named:
        if path:
            origin = origin or f"job parameter {CONFIG_PARAMETER}"
            if not os.path.isfile(os.path.expanduser(path)):
                raise ConfigurationError("config", f"settings file {path!r} (from {origin}) does not exist")
            return os.path.abspath(os.path.expanduser(path)), origin
    for path in CONFIG_LOCATIONS:
        full = os.path.abspath(os.path.expanduser(path))
        if os.path.isfile(full):
            return full, "default location"
    return None


def load(path: str) -> dict[str, Any]:
    """The values a TOML settings file holds (its top level, or its ``[databricks_nats]`` table)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser as the tomli backport
        try:
            import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            problem = f"reading {path} on Python 3.10 needs tomli: pip install tomli"
            raise ConfigurationError("config", problem) from None
    try:
        with open(path, "rb") as f:
            values: dict[str, Any] = tomllib.load(f)
    except (OSError, ValueError) as e:  # TOMLDecodeError is a ValueError
        raise ConfigurationError("config", f"cannot read settings file {path}: {e}") from None
    table = values.get("databricks_nats")
    return table if isinstance(table, dict) else values
