"""Job parameters as a Databricks job hands them to a task: notebook widgets, or ``--name=value`` arguments.

Standard library only (the MLflow entry point reads ``nats_config`` from here while ``import mlflow`` runs).
An unresolved reference (``{{job.run_id}}`` outside a job run) is not a value.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["job_parameters"]

_ARG = re.compile(r"--?([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


def _dbutils() -> Any:
    main = sys.modules.get("__main__")
    dbutils = getattr(main, "dbutils", None)
    if dbutils is None and "IPython" in sys.modules:
        get_ipython = getattr(sys.modules["IPython"], "get_ipython", None)
        ip = get_ipython() if callable(get_ipython) else None
        dbutils = ip.user_ns.get("dbutils") if ip is not None else None
    return dbutils


def _widgets(names: Iterable[str]) -> Mapping[str, str]:
    dbutils = _dbutils()
    if dbutils is None:
        return {}
    out = {}
    for name in names:
        try:
            value = dbutils.widgets.get(name)
        except Exception:  # noqa: BLE001, S112 - an undefined widget raises (a py4j error on Databricks)
            continue
        if value:
            out[name] = str(value)
    return out


def _argv(argv: Iterable[str], names: Iterable[str]) -> Mapping[str, str]:
    wanted = set(names)
    out = {}
    for arg in argv:
        m = _ARG.fullmatch(arg)
        if m and m.group(1) in wanted:
            out[m.group(1)] = m.group(2)
    return out


def job_parameters(names: Iterable[str], argv: Iterable[str] | None = None) -> dict[str, str]:
    """The values of these job parameters (widgets win over arguments); unset and unresolved ones left out."""
    names = tuple(names)
    given = {**_argv(sys.argv[1:] if argv is None else argv, names), **_widgets(names)}
    return {k: v for k, v in given.items() if v and "{{" not in v}
