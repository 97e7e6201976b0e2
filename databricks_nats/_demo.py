"""The workloads of ``databricks-nats demo``: a real one (MLflow + Spark, local) and a simulated one."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
import warnings
from typing import Any

__all__ = ["real", "simulated"]


def real(dn: Any, workdir: str) -> None:
    """Train a small model under autologging on a local MLflow store, register it, and run a short Spark job."""
    try:
        import mlflow
        from sklearn.datasets import load_diabetes
        from sklearn.linear_model import Ridge
    except ImportError as e:
        print(f"({e.name} is not installed: emitting a simulated run instead; pip install 'databricks-nats[dev]')")
        simulated(dn, workdir)
        return
    warnings.filterwarnings("ignore")
    for name in ("mlflow", "alembic", "py4j", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    spark = _spark(workdir)
    with contextlib.redirect_stderr(io.StringIO()):
        dn.autolog(spark=spark, log_models=True, silent=True, exclude_flavors=["pyspark", "pyspark.ml"])
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("demo", artifact_location=f"{workdir}/artifacts"))
    X, y = load_diabetes(return_X_y=True)
    with mlflow.start_run(run_name="demo-ridge") as run:
        Ridge(alpha=0.5).fit(X, y)  # autologging: params, metrics, the model
        for step in range(300):  # a training loop's metric points are coalesced into a few events
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        if spark is not None:
            spark.range(1_000_000).selectExpr("id % 10 AS k").groupBy("k").count().collect()
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "demo_churn")
    mlflow.MlflowClient().set_registered_model_alias("demo_churn", "champion", version.version)
    if spark is not None:
        from databricks_nats import spark as nats_spark

        nats_spark.detach(spark)
        spark.stop()
    with contextlib.redirect_stderr(io.StringIO()):
        dn.autolog(disable=True, exclude_flavors=["pyspark", "pyspark.ml"])


def _spark(workdir: str) -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        print("(pyspark is not installed: skipping the Spark job)")
        return None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("databricks-nats-demo")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.warehouse.dir", f"{workdir}/warehouse")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def simulated(dn: Any, workdir: str) -> None:
    """What a training run announces, emitted directly (the MLflow hook emits the same from real runs)."""
    exp, run = "42", "3f2a9c0d1e"
    base = {
        "experiment_id": exp,
        "run_id": run,
        "run_name": "churn-xgb",
        "artifact_uri": f"dbfs:/databricks/mlflow/{exp}/{run}/artifacts",
    }
    run_url = f"#mlflow/experiments/{exp}/runs/{run}"
    dn.emit("mlflow.run.started", {**base, "run_url": run_url, "user": "demo@example.com"})
    dn.emit("mlflow.run.params", {**base, "params": {"max_depth": "6", "eta": "0.1"}})
    for step in range(1, 6):
        metrics = {"auc": 0.80 + step / 100, "loss": float("nan") if step == 1 else 1 / step}
        dn.emit("mlflow.run.metrics", {**base, "metrics": metrics, "points": 2, "final": False})
        time.sleep(0.05)
    files = [{"path": "model/MLmodel", "size": 412}]
    dn.emit("mlflow.run.artifacts", {**base, "files": files, "file_count": 1, "total_bytes": 412})
    model = {"name": "main.ml.churn", "catalog_name": "main", "is_unity_catalog": True}
    dn.emit(
        "mlflow.model.version_created", {**model, "version": "3", "run_id": run, "model_uri": "models:/main.ml.churn/3"}
    )
    dn.emit(
        "mlflow.model.alias_set",
        {**model, "alias": "champion", "version": "3", "model_uri": "models:/main.ml.churn@champion"},
    )
    dn.emit(
        "mlflow.run.finished",
        {**base, "status": "FINISHED", "duration_ms": 5230, "metrics": {"auc": 0.85}, "run_url": run_url},
    )
