# Databricks notebook source
# MAGIC %md
# MAGIC # databricks-nats: consumer
# MAGIC Tail the events of this workspace and environment, then wait for a given model version, as a test or a
# MAGIC downstream job would. Delivery is at least once; event ids let you drop repeats.

# COMMAND ----------

# MAGIC %pip install databricks-nats

# COMMAND ----------

dbutils.widgets.text("nats_url", "nats://127.0.0.1:4222", "NATS URL")
dbutils.widgets.text("env", "dev", "Environment")
dbutils.widgets.text("model_name", "nats_demo_model", "Registered model name")
dbutils.widgets.text("version", "1", "Model version to wait for")
dbutils.widgets.text("lookback_minutes", "60", "Tail events from this many minutes ago")

# COMMAND ----------

import datetime as dt

import databricks_nats
from databricks_nats.consumer import subscribe, wait_for

databricks_nats.configure(url=dbutils.widgets.get("nats_url"), env=dbutils.widgets.get("env"))
since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=int(dbutils.widgets.get("lookback_minutes")))

# COMMAND ----------

tailed = []
with subscribe(start=since) as events:
    while len(tailed) < 20:
        try:
            event = events.next(timeout=2)
        except TimeoutError:
            break  # caught up
        tailed.append(event)
        print(event.time.isoformat(timespec="seconds"), event.type, event.dataref or event.subject)

# COMMAND ----------

name, version = dbutils.widgets.get("model_name"), dbutils.widgets.get("version")
created = wait_for("mlflow.model.version_created", match={"name": name, "version": version}, start=since, timeout=60)
print("model", name, "version", version, "exists:", created.data.get("model_uri"), "from run", created.data.get("run_id"))
