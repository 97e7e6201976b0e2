"""Flows the Prefect tests deploy. The runner re-imports this file in a new process: keep it free of test code."""

from __future__ import annotations

from prefect import flow


@flow(name="databricks-nats-promote")
def promote(model: str, version: str, event_id: str = "") -> str:
    """Stands for a deployment step; returns what it was asked to promote."""
    return f"{model}@{version} ({event_id})"
