"""Pointer URIs for MLflow objects: UI URLs (Databricks or OSS MLflow routes) and ``models:/`` URIs.

Which UI a run lives in follows the tracking URI of the store that logged it, decided once per store:

* ``databricks`` / ``databricks://<profile>`` (or no tracking URI set while on Databricks): the workspace UI,
  ``<workspace>/ml/experiments/<exp>/runs/<run>`` (logged models ``…/ml/experiments/<exp>/models/<id>``, Unity
  Catalog models ``<workspace>/explore/data/models/<catalog>/<schema>/<model>[/version/<n>]``) — the routes
  MLflow's own ``databricks_utils`` builds. The workspace URL comes from context detection (REPL context,
  Spark conf ``spark.databricks.workspaceUrl``, the SDK's configured host), else ``DATABRICKS_HOST``; it is
  looked up once per hook (re)configure, never per call.
* ``http(s)://…`` (an ``mlflow server``): ``<server>/#/experiments/<exp>/runs/<run>``.
* anything else (sqlite, file stores): no URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Ui",
    "databricks_workspace_url",
    "logged_model_uri",
    "model_uri",
    "run_url",
    "ui_for",
]


@dataclass(frozen=True)
class Ui:
    """The UI of one tracking URI: ``kind`` is ``databricks`` or ``oss``; ``base`` its URL (None: unknown)."""

    kind: str
    base: str | None

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        if not self.base:
            return None
        if self.kind == "databricks":
            return f"{self.base}/ml/experiments/{experiment_id}/runs/{run_id}"
        return f"{self.base}/#/experiments/{experiment_id}/runs/{run_id}"

    def logged_model_url(self, experiment_id: str, model_id: str) -> str | None:
        if not self.base or self.kind != "databricks" or not experiment_id:
            return None
        return f"{self.base}/ml/experiments/{experiment_id}/models/{model_id}"


NO_UI = Ui("none", None)


def is_databricks_uri(uri: str | None) -> bool:
    """``databricks`` or ``databricks://profile[:prefix]`` (what MLflow's ``is_databricks_uri`` accepts)."""
    return bool(uri) and (uri == "databricks" or str(uri).startswith("databricks:"))


def ui_for(tracking_uri: str | None, workspace_url: Any, on_databricks: bool = False) -> Ui:
    """The UI of runs logged through a store of this tracking URI.

    ``workspace_url``: the workspace URL, or a callable returning it (called only for a Databricks URI).
    """
    uri = (tracking_uri or "").strip()
    if is_databricks_uri(uri) or (not uri and on_databricks):
        base = workspace_url() if callable(workspace_url) else workspace_url
        return Ui("databricks", _clean(base))
    if uri.startswith(("http://", "https://")):
        return Ui("oss", uri.rstrip("/"))
    return NO_UI


def databricks_workspace_url(context_url: str | None) -> str | None:
    """The workspace URL context detection found, else ``DATABRICKS_HOST`` (the SDK's and MLflow's variable)."""
    return _clean(context_url) or _clean(os.environ.get("DATABRICKS_HOST"))


def _clean(url: str | None) -> str | None:
    if not url:
        return None
    url = str(url).strip().rstrip("/")
    return url if url.startswith(("http://", "https://")) else "https://" + url


def run_url(experiment_id: str, run_id: str, ui: Ui = NO_UI) -> str | None:
    """The run's page in the UI of its tracking server, when that UI's address is known."""
    return ui.run_url(experiment_id, run_id)


def uc_model_url(ui: Ui, name: str, version: str | None = None) -> str | None:
    """A Unity Catalog model's (or version's) page in Catalog Explorer, for a three-level name."""
    if not ui.base or ui.kind != "databricks" or name.count(".") != 2:
        return None
    url = f"{ui.base}/explore/data/models/{name.replace('.', '/')}"
    return f"{url}/version/{version}" if version else url


def model_uri(name: str, version: str | None = None, alias: str | None = None) -> str:
    """``models:/<name>/<version>``, ``models:/<name>@<alias>`` or ``models:/<name>``."""
    if alias:
        return f"models:/{name}@{alias}"
    return f"models:/{name}/{version}" if version else f"models:/{name}"


def logged_model_uri(model_id: str) -> str:
    return f"models:/{model_id}"
