# Databricks notebook source
# MAGIC %md
# MAGIC # databricks-nats: registry
# MAGIC Register a model version, promote it with an alias, and react to the `mlflow.model.alias_set` event the
# MAGIC way a deployment job would. Unity Catalog takes a three-level name (`main.ml.churn`) and a model with a
# MAGIC signature.
# MAGIC
# MAGIC The job installs the wheel the bundle built (a task library) and names the settings file; run by hand,
# MAGIC attach that wheel to the cluster and set `DATABRICKS_NATS_CONFIG` or the `nats_config` widget.

# COMMAND ----------

# Empty defaults: the job passes the values (see bundle/databricks.yml).
dbutils.widgets.text("model_name", "", "Registered model (catalog.schema.model on Unity Catalog)")
dbutils.widgets.text("registry_uri", "", "MLflow registry URI (databricks-uc for Unity Catalog)")

# COMMAND ----------

import datetime as dt

import mlflow
from mlflow import MlflowClient

model_name = dbutils.widgets.get("model_name")
if not model_name:
    raise ValueError("set the model_name widget (the bundle's job passes it)")
if dbutils.widgets.get("registry_uri"):
    mlflow.set_registry_uri(dbutils.widgets.get("registry_uri"))
started = dt.datetime.now(dt.timezone.utc)

# COMMAND ----------

from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

X, y = load_iris(return_X_y=True, as_frame=True)
with mlflow.start_run(run_name="registry-demo"):
    clf = LogisticRegression(max_iter=300).fit(X, y)
    signature = infer_signature(X, clf.predict(X))  # Unity Catalog registers only models with a signature
    info = mlflow.sklearn.log_model(
        clf, "model", signature=signature, input_example=X.head(3), registered_model_name=model_name
    )
version = info.registered_model_version
MlflowClient().set_registered_model_alias(model_name, "champion", version)
print("registered", model_name, "version", version, "as champion")

# COMMAND ----------

from databricks_nats.consumer import wait_for

# React as a deployment job would: wait for the alias event (from when this notebook started).
event = wait_for("mlflow.model.alias_set", match={"name": model_name, "alias": "champion"}, start=started, timeout=60)
print("deploy", event.data["model_uri"], "version", event.data["version"], "(event", event.id + ")")
