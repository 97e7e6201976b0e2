"""The workloads of ``databricks-nats demo`` (a real one: MLflow + Spark, local; a simulated one), and what keeps
its live view to events only: ``logs_to`` sends every other line (Spark's log4j output, Python warnings, MLflow's
prints) to a log file, and ``summary`` is the closing table."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["logs_to", "real", "run", "simulated", "summary"]


def run(args: Any) -> int:
    """``databricks-nats demo``: the workload on a server (an embedded one without ``--url``), its events printed
    live as they arrive from the stream, everything else in a log file, then a summary."""
    import datetime as dt

    import databricks_nats as dn
    from databricks_nats.consumer import subscribe
    from databricks_nats.eventlines import print_events

    with _server(args.url) as url:
        workdir = tempfile.mkdtemp(prefix="dbx-nats-demo-")
        log = f"{workdir}/demo.log"
        settings = dn.configure(url=url, workspace=args.workspace, env=args.env, spool_dir=f"{workdir}/spool")
        dn.ensure_stream()
        stop, seen, counts = threading.Event(), [0], Counter[str]()
        sub = subscribe(start=dt.datetime.now(dt.timezone.utc))
        print(f"listening on {settings.namespace}.>  (events arrive live below)\n", flush=True)
        with logs_to(log) as out:  # Spark's and MLflow's own lines go to the log, events to the terminal
            printer = threading.Thread(target=print_events, args=(sub, False, None, stop, seen, out, counts))
            printer.daemon = True
            printer.start()
            (simulated if args.simulate else real)(dn, workdir, out)
            result = dn.flush(timeout=30)
            stats = dn.stats()
            deadline = time.monotonic() + 10
            while seen[0] < stats["acked"] and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            printer.join(5)
        sub.close()
        dn.shutdown()
        lat = stats["ack_latency_ms"]
        print("\n" + "\n".join(summary(counts, stats)))
        print(
            f"\n{stats['emitted']} events emitted, {stats['acked']} acked by JetStream stream {settings.stream_name}, "
            f"{seen[0]} received live; ack latency p50 {lat['p50']} ms, p99 {lat['p99']} ms"
        )
        print(f"Spark and MLflow logs: {log}")
        return 0 if result.ok and seen[0] == stats["emitted"] == stats["acked"] else 1


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from databricks_nats.testing import NatsServer

    with NatsServer() as srv:
        print(f"started an embedded nats-server with JetStream at {srv.url}")
        yield srv.url


@contextlib.contextmanager
def logs_to(path: str) -> Iterator[IO[str]]:
    """Send this process's stdout and stderr, and those of the processes it starts (Spark's JVM), to ``path``;
    yield the stream the events go to: the terminal the demo started on.

    At file-descriptor level, because the JVM writes to the descriptors it inherits, not to ``sys.stderr``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    fds: tuple[int, ...]
    try:
        fds = (sys.stdout.fileno(), sys.stderr.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):  # replaced streams (a test's capture): Python only
        fds = ()
    out: IO[str] = os.fdopen(os.dup(fds[0]), "w", buffering=1) if fds else sys.stdout
    saved = [os.dup(fd) for fd in fds]
    with open(path, "a", buffering=1) as log:
        for fd in fds:
            os.dup2(log.fileno(), fd)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield out
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip(fds, saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            if out is not sys.stdout:
                out.close()


def summary(counts: Counter[str], stats: dict[str, Any]) -> list[str]:
    """The closing table: events received per type, then the totals and the ack latency."""
    width = max([len("event type"), *map(len, counts)]) + 2
    lines = [f"{'event type':<{width}}{'received':>8}", "-" * (width + 8)]
    lines += [f"{etype:<{width}}{n:>8}" for etype, n in counts.items()]  # in order of arrival
    lines.append("-" * (width + 8))
    lat = stats.get("ack_latency_ms") or {}
    rows = [
        ("received live", sum(counts.values())),
        ("emitted", stats.get("emitted")),
        ("acked by JetStream", stats.get("acked")),
        ("dropped", stats.get("dropped_total", 0)),
        ("ack latency p50 ms", lat.get("p50")),
        ("ack latency p99 ms", lat.get("p99")),
    ]
    lines += [f"{name:<{width}}{'-' if value is None else value:>8}" for name, value in rows]
    return lines


def real(dn: Any, workdir: str, out: IO[str] | None = None) -> None:
    """Train a small model under autologging on a local MLflow store, register it, and run a short Spark job;
    notes on what is missing go to ``out`` (the live view)."""
    try:
        import mlflow
        from sklearn.datasets import load_diabetes
        from sklearn.linear_model import Ridge
    except ImportError as e:
        hint = "emitting a simulated run instead; pip install 'databricks-nats[dev]'"
        print(f"({e.name} is not installed: {hint})", file=out or sys.stdout, flush=True)
        simulated(dn, workdir)
        return
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    spark = _spark(workdir, out)
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
    dn.autolog(disable=True, exclude_flavors=["pyspark", "pyspark.ml"])


def _spark(workdir: str, out: IO[str] | None) -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        print("(pyspark is not installed: skipping the Spark job)", file=out or sys.stdout, flush=True)
        return None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("databricks-nats-demo")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")  # its progress bar would cut through the event lines
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.warehouse.dir", f"{workdir}/warehouse")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")  # into the demo's log file, not the terminal (logs_to)
    return spark


def simulated(dn: Any, workdir: str, out: IO[str] | None = None) -> None:
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
