# Databricks notebook source
# MAGIC %md
# MAGIC # databricks-nats: registry
# MAGIC Register a model version, promote it with an alias, and react to the `mlflow.model.alias_set` event the
# MAGIC way a deployment job would. On Unity Catalog use a three-level name such as `main.ml.churn`.

# COMMAND ----------

# MAGIC %pip install databricks-nats

# COMMAND ----------

dbutils.widgets.text("nats_url", "nats://127.0.0.1:4222", "NATS URL")
dbutils.widgets.text("env", "dev", "Environment")
dbutils.widgets.text("model_name", "nats_demo_model", "Registered model name")

# COMMAND ----------

import datetime as dt

import mlflow
from mlflow import MlflowClient

import databricks_nats
from databricks_nats.consumer import wait_for
from databricks_nats.integrations import mlflow as nats_mlflow

databricks_nats.configure(url=dbutils.widgets.get("nats_url"), env=dbutils.widgets.get("env"))
nats_mlflow.install()
model_name = dbutils.widgets.get("model_name")
started = dt.datetime.now(dt.timezone.utc)

# COMMAND ----------

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

X, y = load_iris(return_X_y=True)
with mlflow.start_run(run_name="registry-demo"):
    clf = LogisticRegression(max_iter=300).fit(X, y)
    info = mlflow.sklearn.log_model(clf, "model", registered_model_name=model_name)
version = info.registered_model_version
MlflowClient().set_registered_model_alias(model_name, "champion", version)
print("registered", model_name, "version", version, "as champion")

# COMMAND ----------

# React as a deployment job would: wait for the alias event (from when this notebook started).
event = wait_for("mlflow.model.alias_set", match={"name": model_name, "alias": "champion"}, start=started, timeout=60)
print("deploy", event.data["model_uri"], "version", event.data["version"], "(event", event.id + ")")
