# Databricks notebook source
# MAGIC %md
# MAGIC # databricks-nats: streaming
# MAGIC A Structured Streaming query writes into a table; the listener announces the query's lifecycle, its
# MAGIC progress (bounded: at most one event per query per interval) and a pointer to the table it updated.

# COMMAND ----------

# MAGIC %pip install databricks-nats

# COMMAND ----------

dbutils.widgets.text("nats_url", "nats://127.0.0.1:4222", "NATS URL")
dbutils.widgets.text("env", "dev", "Environment")
dbutils.widgets.text("input_dir", "/tmp/databricks-nats-demo/input", "Input folder (JSON files)")
dbutils.widgets.text("table", "nats_demo_features", "Target table")

# COMMAND ----------

import datetime as dt
import json
import pathlib

import databricks_nats
from databricks_nats import spark as nats_spark

databricks_nats.configure(url=dbutils.widgets.get("nats_url"), env=dbutils.widgets.get("env"))
table = dbutils.widgets.get("table")
nats_spark.attach(spark, tables={"features": table})
started = dt.datetime.now(dt.timezone.utc)

# COMMAND ----------

# Simulate an upstream system dropping three files of feature rows.
folder = pathlib.Path(dbutils.widgets.get("input_dir"))
folder.mkdir(parents=True, exist_ok=True)
for part in range(3):
    rows = (json.dumps({"user_id": part * 100 + i, "clicks": i % 7}) for i in range(100))
    (folder / f"part-{part}.json").write_text("\n".join(rows) + "\n")

# COMMAND ----------

query = (
    spark.readStream.schema("user_id LONG, clicks LONG")
    .option("maxFilesPerTrigger", 1)
    .json(str(folder))
    .writeStream.queryName("features")
    .option("checkpointLocation", str(folder.parent / "_checkpoint"))
    .trigger(availableNow=True)
    .toTable(table)
)
query.awaitTermination()
print("rows in", table, spark.table(table).count())

# COMMAND ----------

nats_spark.settle(spark)
databricks_nats.flush(timeout=30)
events = nats_spark.read_events(spark, start=started)
display(events.where("type LIKE 'spark.stream.%' OR type = 'data.table.updated'").select("type", "subject", "data"))
