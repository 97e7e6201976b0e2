# Databricks notebook source
# MAGIC %md
# MAGIC # databricks-nats: quickstart
# MAGIC Configure publishing, switch on autologging for MLflow and Spark, train a small model, and read back the
# MAGIC events it announced. Credentials come from the cluster's environment or a secret scope, never from here.

# COMMAND ----------

# MAGIC %pip install databricks-nats

# COMMAND ----------

dbutils.widgets.text("nats_url", "nats://127.0.0.1:4222", "NATS URL")
dbutils.widgets.text("env", "dev", "Environment")
dbutils.widgets.text("experiment", "/Shared/databricks-nats-quickstart", "MLflow experiment")

# COMMAND ----------

import datetime as dt

import mlflow

import databricks_nats
from databricks_nats import spark as nats_spark

settings = databricks_nats.configure(url=dbutils.widgets.get("nats_url"), env=dbutils.widgets.get("env"))
# Spark is announced by our listeners (spark=); MLflow's own Spark datasource autologging needs a JVM package.
databricks_nats.autolog(spark=spark, log_models=True, exclude_flavors=["pyspark", "pyspark.ml"])
started = dt.datetime.now(dt.timezone.utc)
print("publishing to", settings.namespace, "stream", settings.stream_name)

# COMMAND ----------

from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

mlflow.set_experiment(dbutils.widgets.get("experiment"))
X, y = load_diabetes(return_X_y=True)
with mlflow.start_run(run_name="quickstart") as run:
    model = Ridge(alpha=0.5).fit(X, y)
    mlflow.log_metric("r2_train", model.score(X, y))
    total = spark.range(100_000).selectExpr("sum(id) AS total").first().total
print("run", run.info.run_id, "spark total", total)

# COMMAND ----------

# MAGIC %md
# MAGIC Every event is a lean pointer: where the thing is (`dataref`), never the thing.

# COMMAND ----------

databricks_nats.flush(timeout=30)
nats_spark.detach(spark)  # publishes the pending summary of short Spark executions
databricks_nats.flush(timeout=30)
events = nats_spark.read_events(spark, start=started)
display(events.select("time", "type", "subject", "dataref").orderBy("stream_seq"))
print(databricks_nats.stats())
