"""Spark listener overhead (P4): job time with the listeners attached / not, side by side in one run.

Run: ``python -m benchmarks.bench_spark [--quick]``. One real nats-server (JetStream), one ``local[2]``
session, warmed up on both paths first (the JIT keeps shortening job times for dozens of runs). Each
repetition times the same job detached and attached (order alternating, so both see the same machine
state; in each state one untimed call, then the median of three timed ones), for a 1e6-row aggregation
and a tiny job. The ratio is the median of the per-repetition ratios; the medians
of wall times are shown beside it.
The default policy (executions under 1 s are counted into summaries) and the every-execution policy
(``min_execution_ms=0``: one event per execution) are both measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

from benchmarks._common import median, print_table, ratio, verdict, write_results

TARGET = 1.03
BLOCK_S = 2.5  # seconds of timed calls per state and repetition (their mean is the repetition's time)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps = 5 if args.quick else 21
    warnings.filterwarnings("ignore")
    os.environ["PYSPARK_PYTHON"] = sys.executable

    from pyspark.sql import SparkSession

    import databricks_nats
    from databricks_nats import spark as nats_spark
    from databricks_nats.integrations.spark import _compat
    from databricks_nats.integrations.spark import jobs as spark_jobs
    from databricks_nats.testing import NatsServer

    tmp = tempfile.mkdtemp(prefix="bench-spark-")
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.warehouse.dir", tmp)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")

    def aggregation() -> None:
        spark.range(1_000_000).selectExpr("id % 1000 AS k", "id AS v").groupBy("k").sum("v").collect()

    def tiny() -> None:
        spark.range(10).count()

    jobs: dict[str, Callable[[], None]] = {"aggregation 1e6 rows": aggregation, "tiny job": tiny}
    linger = spark_jobs.LINGER
    jvm_filter = _compat._jvm_filter
    policies: dict[str, tuple[dict[str, Any], float, bool]] = {  # attach options, linger, JVM-side filter
        "default policy": ({}, linger, True),
        "every execution": ({"min_execution_ms": 0}, linger, True),
        "every execution, as before": ({"min_execution_ms": 0}, 0.0, False),
    }
    calls: dict[str, int] = {}
    times: dict[str, dict[str, list[float]]] = {
        f"{job} / {policy}": {"off": [], "on": [], "cpu_off": [], "cpu_on": []} for job in jobs for policy in policies
    }
    with NatsServer() as srv:
        databricks_nats.configure(url=srv.url, spool_dir=os.path.join(tmp, "spool"), workspace="bench", env="spark")
        for _ in range(3):  # warm up the JVM's JIT on both paths (job times keep falling for dozens of runs)
            for attached in (True, False):
                if attached:
                    nats_spark.attach(spark)
                for fn in jobs.values():
                    for _ in range(5):
                        fn()
                if attached:
                    nats_spark.detach(spark)
        for job, fn in jobs.items():  # calls per timed block, from the warm job's time
            once = []
            for _ in range(5):
                t0 = time.perf_counter()
                fn()
                once.append(time.perf_counter() - t0)
            calls[job] = max(5, round(BLOCK_S / min(once)))  # the fastest: load from elsewhere only slows
        for rep in range(reps):
            for policy, (options, policy_linger, filtered) in policies.items():
                spark_jobs.LINGER = policy_linger  # read by the listener attach() creates
                _compat._jvm_filter = jvm_filter if filtered else (lambda gateway, out: None)
                for job, fn in jobs.items():
                    key = f"{job} / {policy}"
                    for attached in (False, True) if rep % 2 == 0 else (True, False):
                        if attached:
                            nats_spark.attach(spark, **options)
                        fn()  # steady state: the listener's first calls open py4j connections
                        t0, c0 = time.perf_counter(), time.process_time()
                        for _ in range(calls[job]):
                            fn()
                        state = "on" if attached else "off"
                        times[key][state].append((time.perf_counter() - t0) / calls[job])
                        times[key]["cpu_" + state].append((time.process_time() - c0) / calls[job])
                        if attached:
                            nats_spark.detach(spark)
        spark_jobs.LINGER = linger
        _compat._jvm_filter = jvm_filter
        databricks_nats.flush(30)
        stats: dict[str, Any] = databricks_nats.stats()
        databricks_nats.shutdown()
    spark.stop()

    load = os.getloadavg()
    rows, out = [], {"reps": reps, "linger_s": linger, "calls": calls, "load": load, "acked_events": stats["acked"]}
    out["results"] = {}
    for key, t in times.items():
        off, on = median(t["off"]) * 1e3, median(t["on"]) * 1e3
        r = median(ratio(a, b) for a, b in zip(t["on"], t["off"], strict=True))
        cpu = median(a - b for a, b in zip(t["cpu_on"], t["cpu_off"], strict=True)) * 1e3
        gated = key.startswith("aggregation") and not key.endswith("as before")
        rows.append(
            [
                key,
                f"{off:.1f} ms",
                f"{on:.1f} ms",
                f"{r:.3f}",
                f"{cpu:+.2f} ms",
                f"<= {TARGET}" if gated else "-",
                verdict(r <= TARGET) if gated else "-",
            ]
        )
        out["results"][key] = {
            "without_ms": off,
            "with_ms": on,
            "ratio": r,
            "python_cpu_ms": cpu,
            "target": TARGET if gated else None,
            "met": r <= TARGET if gated else None,
            "raw": t,
        }
    print_table(
        ["job", "detached", "attached", "ratio", "driver CPU/call", "target", "result"],
        rows,
        title=f"bench_spark (reps={reps}, linger {linger} s, blocks of {calls}; medians; {stats['acked']} events acked;"
        f" load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})",
    )
    print(f"results: {write_results('bench_spark' + ('_quick' if args.quick else ''), out)}")


if __name__ == "__main__":
    main()
