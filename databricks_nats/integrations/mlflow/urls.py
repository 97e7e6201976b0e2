"""Pointer URIs for MLflow objects: run URLs in the workspace UI and ``models:/`` URIs."""

from __future__ import annotations

import os

__all__ = ["logged_model_uri", "model_uri", "run_url"]


def _ui_base() -> str | None:
    host = os.environ.get("DATABRICKS_HOST")
    if host:
        return ("" if host.startswith("http") else "https://") + host.rstrip("/")
    try:
        import mlflow

        uri = mlflow.get_tracking_uri()
    except Exception:  # noqa: BLE001 - a URL is a nicety, never a reason to fail
        return None
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None


def run_url(experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow (or Databricks workspace) UI, when the UI's address is known."""
    base = _ui_base()
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else None


def model_uri(name: str, version: str | None = None, alias: str | None = None) -> str:
    """``models:/<name>/<version>``, ``models:/<name>@<alias>`` or ``models:/<name>``."""
    if alias:
        return f"models:/{name}@{alias}"
    return f"models:/{name}/{version}" if version else f"models:/{name}"


def logged_model_uri(model_id: str) -> str:
    return f"models:/{model_id}"
