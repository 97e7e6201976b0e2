"""A notebook on Spark Connect, as a script run in a process of its own (tests/spark/test_spark_connect.py).

Reads its arguments as JSON on stdin (the NATS token among them: given through settings, never argv),
configures publishing, attaches to a Spark Connect session, runs a batch action, a named streaming query
inside an MLflow run and one outside, and prints one ``RESULT {json}`` line. Logs go to stderr at DEBUG.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({"level": record.levelname, "logger": record.name, "message": record.getMessage()})


def main() -> None:
    args = json.loads(sys.stdin.read())
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    for noisy in ("py4j", "urllib3", "alembic", "sqlalchemy", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    keep = _Keep()
    logging.getLogger("databricks_nats").addHandler(keep)

    import mlflow
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQueryListener

    import databricks_nats
    from databricks_nats import spark as nats_spark
    from databricks_nats import status
    from databricks_nats.integrations import mlflow as nats_mlflow

    databricks_nats.configure(
        url=args["nats_url"],
        token=args["token"],
        spool_dir=args["spool_dir"],
        workspace=args["workspace"],
        env=args["env"],
        ack_timeout=1.0,
    )
    spark = SparkSession.builder.remote(args["connect_url"]).getOrCreate()
    attachment = nats_spark.attach(spark, progress_interval=0)

    terminated: set[str] = set()

    class Done(StreamingQueryListener):  # added after ours: once it heard a termination, ours has published it
        def onQueryStarted(self, event: Any) -> None:
            pass

        def onQueryProgress(self, event: Any) -> None:
            pass

        def onQueryIdle(self, event: Any) -> None:
            pass

        def onQueryTerminated(self, event: Any) -> None:
            terminated.add(str(event.id))

    spark.streams.addListener(Done())

    def run_query(name: str, folder: str) -> str:
        query = (
            spark.readStream.schema("id LONG, value DOUBLE")
            .option("maxFilesPerTrigger", 1)
            .json(folder)
            .writeStream.format("memory")
            .queryName(name)
            .trigger(availableNow=True)
            .option("checkpointLocation", folder + "-checkpoint")
            .start()
        )
        query.awaitTermination(300)
        return str(query.id)

    total = spark.range(1000).selectExpr("sum(id) AS total").collect()[0]["total"]  # a batch action

    mlflow.set_tracking_uri(args["mlflow_uri"])
    nats_mlflow.install()
    experiment = mlflow.create_experiment("spark-connect")
    with mlflow.start_run(experiment_id=experiment) as run:
        in_run = run_query("in_run", args["folders"][0])
    outside = run_query("outside_run", args["folders"][1])
    shipped = shipped_to_the_server(args, spark, attachment.streaming, mlflow, experiment)

    deadline = time.monotonic() + 120
    while not {in_run, outside} <= terminated and time.monotonic() < deadline:
        time.sleep(0.1)
    flushed = databricks_nats.flush(timeout=30)
    result = {
        "total": total,
        "run_id": run.info.run_id,
        "queries": {"in_run": in_run, "outside_run": outside, "shipped": shipped["query_id"]},
        "shipped": shipped,
        "terminated_heard": sorted(terminated),
        "flushed": flushed.ok,
        "families": status.families(),
        "stats": databricks_nats.stats(),
        "listener_repr": repr(attachment.streaming),
        "jobs_listener": attachment.jobs is not None,
        "records": keep.records,
        "threads": [t.name for t in threading.enumerate()],
    }
    nats_mlflow.uninstall()
    nats_spark.detach(spark)
    spark.stop()
    print("RESULT " + json.dumps(result, default=str), flush=True)


def shipped_to_the_server(args: dict[str, Any], spark: Any, listener: Any, mlflow: Any, experiment: str) -> Any:
    """What a PySpark 3.5 client's listener does on the server: correlation through the session's conf.

    A PySpark 3.5 client (``listener_runs_on_server``: its version is the only thing made to differ here)
    names the run in the session conf; the listener, cloudpickled and run in a clean process on a session
    with the same id, reads it when a query starts whose event has no job tags (Spark 3.5 events).
    """
    import os
    import subprocess
    import uuid

    from pyspark.serializers import CloudPickleSerializer

    from databricks_nats.integrations.spark import _compat

    _compat.listener_runs_on_server = lambda: True  # type: ignore[assignment] - this client plays PySpark 3.5
    qid, rid = str(uuid.uuid4()), str(uuid.uuid4())
    events = [
        (0, json.dumps({"id": qid, "runId": rid, "name": "shipped", "timestamp": "2026-01-01T00:00:00.000Z"})),
        (3, json.dumps({"id": qid, "runId": rid, "exception": None, "errorClassOnException": None})),
    ]
    work = args["shipped_dir"]
    with open(os.path.join(work, "listener.pickle"), "wb") as f:
        f.write(CloudPickleSerializer().dumps(listener))
    with open(os.path.join(work, "events.json"), "w") as f:
        json.dump(events, f)
    with mlflow.start_run(experiment_id=experiment) as run:
        proc = subprocess.run(
            [
                sys.executable,
                "-I",
                args["worker"],
                os.path.join(work, "listener.pickle"),
                os.path.join(work, "events.json"),
                args["package_dir"],
                args["repository"],
                args["connect_url"],
                spark.session_id,
            ],
            cwd=os.path.join(work, "cwd"),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    return {
        "query_id": qid,
        "run_id": run.info.run_id,
        "returncode": proc.returncode,
        "stdout": proc.stdout,
        "stderr": proc.stderr[-6000:],
    }


if __name__ == "__main__":
    main()
