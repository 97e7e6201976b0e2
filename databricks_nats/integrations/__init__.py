"""Integrations (MLflow, Spark, Databricks, Airflow, Prefect): they use the model and the transport."""

__all__: list[str] = []
