# Databricks notebook source
# MAGIC %md
# MAGIC # databricks-nats: streaming (placeholder)
# MAGIC The full notebook is being written; the bundle (bundle/databricks.yml) already references this path.

# COMMAND ----------

import databricks_nats

print(databricks_nats.get_settings().namespace)
