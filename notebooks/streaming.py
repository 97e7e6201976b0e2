# Databricks notebook source
# MAGIC %md
# MAGIC # databricks-nats: streaming
# MAGIC A Structured Streaming query writes into a table; the listener announces the query's lifecycle, its
# MAGIC progress (bounded: at most one event per query per interval) and a pointer to the table it updated.
# MAGIC
# MAGIC The job installs the wheel the bundle built (a task library) and names the settings file; run by hand,
# MAGIC attach that wheel to the cluster and set `DATABRICKS_NATS_CONFIG` or the `nats_config` widget.

# COMMAND ----------

# Empty defaults: the job passes the values (see bundle/databricks.yml).
dbutils.widgets.text("input_dir", "", "Folder for input and checkpoint: a volume (/Volumes/…) or a URI")
dbutils.widgets.text("table", "", "Target table (catalog.schema.table)")

# COMMAND ----------

import datetime as dt

from databricks_nats import spark as nats_spark

base = dbutils.widgets.get("input_dir").rstrip("/")
table = dbutils.widgets.get("table")
if not (base and table):
    raise ValueError("set the input_dir and table widgets (the bundle's job passes both)")
nats_spark.attach(spark, tables={"features": table})
started = dt.datetime.now(dt.timezone.utc)

# COMMAND ----------

# Simulate an upstream system dropping three files of feature rows. Spark writes them, so the path means the
# same to the writer and the reader (a volume, dbfs:/, s3://…), never the driver's local disk.
for part in range(3):
    rows = spark.range(part * 100, part * 100 + 100).selectExpr("id AS user_id", "id % 7 AS clicks")
    rows.coalesce(1).write.mode("append").json(f"{base}/input")

# COMMAND ----------

query = (
    spark.readStream.schema("user_id LONG, clicks LONG")
    .option("maxFilesPerTrigger", 1)
    .json(f"{base}/input")
    .writeStream.queryName("features")
    .option("checkpointLocation", f"{base}/checkpoint")
    .trigger(availableNow=True)
    .toTable(table)
)
query.awaitTermination()
print("rows in", table, spark.table(table).count())

# COMMAND ----------

import databricks_nats

nats_spark.settle(spark)
databricks_nats.flush(timeout=30)
events = nats_spark.read_events(spark, start=started)
display(events.where("type LIKE 'spark.stream.%' OR type = 'data.table.updated'").select("type", "subject", "data"))
