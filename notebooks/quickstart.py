# databricks-nats quickstart: switch on autologging for MLflow and Spark, train a small model, and read back
# the events it announced.
#
# A Python file rather than a notebook, so that the same code runs as a job task on a classic cluster and on
# serverless (a serverless task runs a Python file and gets the wheel from its environment; a notebook task
# cannot). Nothing here configures publishing: URL, environment and credentials come from the settings file
# the job names (DATABRICKS_NATS_CONFIG on the cluster, --nats_config=PATH on serverless). On a laptop:
#   python notebooks/quickstart.py --nats_config=databricks-nats.toml

import datetime as dt

import mlflow
from pyspark.sql import SparkSession
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

import databricks_nats
from databricks_nats import spark as nats_spark
from databricks_nats.jobparams import job_parameters

# The session Databricks started (classic or Spark Connect); a local one elsewhere.
spark = SparkSession.builder.getOrCreate()
experiment = job_parameters(["experiment"]).get("experiment")  # --experiment=… (a notebook widget works too)

# MLflow's hook came with `import mlflow` (zero code); this adds Spark's listeners and MLflow autologging.
# MLflow's own Spark datasource autologging needs a JVM package, so those flavours stay off.
databricks_nats.autolog(spark=spark, log_models=True, exclude_flavors=["pyspark", "pyspark.ml"])
started = dt.datetime.now(dt.timezone.utc)
print("publishing to", databricks_nats.get_settings().namespace)

# Train under autologging; the Spark job in the run is correlated with it.
if experiment:
    mlflow.set_experiment(experiment)
X, y = load_diabetes(return_X_y=True)
with mlflow.start_run(run_name="quickstart") as run:
    model = Ridge(alpha=0.5).fit(X, y)
    mlflow.log_metric("r2_train", model.score(X, y))
    total = spark.range(100_000).selectExpr("sum(id) AS total").first().total
print("run", run.info.run_id, "spark total", total)

# Every event is a lean pointer: where the thing is (`dataref`), never the thing.
databricks_nats.flush(timeout=30)
nats_spark.detach(spark)  # publishes the pending summary of short Spark executions
databricks_nats.flush(timeout=30)
events = nats_spark.read_events(spark, start=started)
shown = events.orderBy("stream_seq").select("time", "type", "subject", "dataref")
if "display" in globals():  # a notebook
    display(shown)  # defined by Databricks notebooks
else:
    shown.show(50, truncate=False)
print(databricks_nats.stats())
