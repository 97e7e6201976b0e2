"""The fixed ids of MLflow changes: the same change, the same id; a different or unknown one, never."""

from __future__ import annotations

from databricks_nats.integrations.mlflow.facts import fact_id


def test_one_change_has_one_id_and_another_change_another() -> None:
    alias = {"name": "churn", "alias": "production", "version": "3", "model_uri": "models:/churn@production"}
    assert fact_id("mlflow.model.alias_set", alias) == fact_id("mlflow.model.alias_set", {**alias, "model_url": "x"})
    assert fact_id("mlflow.model.alias_set", alias) != fact_id("mlflow.model.alias_set", {**alias, "version": "4"})
    assert fact_id("mlflow.model.alias_set", alias) != fact_id("mlflow.prompt.alias_set", alias)
    assert fact_id("mlflow.model.alias_set", alias) == fact_id("mlflow.model.alias_set", {**alias, "version": 3})


def test_a_change_not_fully_known_gets_a_fresh_id() -> None:
    assert fact_id("mlflow.assessment.logged", {"trace_id": "tr-1", "assessment_id": None}) is None
    assert fact_id("mlflow.run.metrics", {"run_id": "r"}) is None  # not a change two publishers announce
    empty_tag = {"name": "churn", "key": "team", "value": ""}  # an empty value is a value
    assert fact_id("mlflow.model.tag_set", empty_tag) is not None
