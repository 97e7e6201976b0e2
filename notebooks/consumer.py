# Databricks notebook source
# MAGIC %md
# MAGIC # databricks-nats: consumer
# MAGIC Tail the events of this workspace and environment, then wait for a model version, as a test or a
# MAGIC downstream job would. Delivery is at least once; event ids let you drop repeats.
# MAGIC
# MAGIC The job installs the wheel the bundle built (a task library) and names the settings file; run by hand,
# MAGIC attach that wheel to the cluster and set `DATABRICKS_NATS_CONFIG` or the `nats_config` widget.

# COMMAND ----------

# Empty defaults: the job passes the values (see bundle/databricks.yml).
dbutils.widgets.text("model_name", "", "Registered model name")
dbutils.widgets.text("version", "", "Model version to wait for (empty: any)")
dbutils.widgets.text("lookback_minutes", "", "Tail events from this many minutes ago (empty: 60)")

# COMMAND ----------

import datetime as dt

from databricks_nats.consumer import subscribe, wait_for

name, version = dbutils.widgets.get("model_name"), dbutils.widgets.get("version")
if not name:
    raise ValueError("set the model_name widget (the bundle's job passes it)")
lookback = int(dbutils.widgets.get("lookback_minutes") or 60)
since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=lookback)

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

match = {"name": name, "version": version} if version else {"name": name}
created = wait_for("mlflow.model.version_created", match=match, start=since, timeout=60)
print("model", name, "version", created.data.get("version"), "exists:", created.data.get("model_uri"))
