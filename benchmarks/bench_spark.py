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
CALLS = 3  # timed calls per state and repetition (their median is the repetition's time)


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
    policies = {"default policy": {}, "every execution": {"min_execution_ms": 0}}
    times: dict[str, dict[str, list[float]]] = {
        f"{job} / {policy}": {"off": [], "on": []} for job in jobs for policy in policies
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
        for rep in range(reps):
            for policy, options in policies.items():
                for job, fn in jobs.items():
                    key = f"{job} / {policy}"
                    for attached in (False, True) if rep % 2 == 0 else (True, False):
                        if attached:
                            nats_spark.attach(spark, **options)
                        fn()  # steady state: the listener's first calls open py4j connections
                        runs = []
                        for _ in range(CALLS):
                            t0 = time.perf_counter()
                            fn()
                            runs.append(time.perf_counter() - t0)
                        times[key]["on" if attached else "off"].append(median(runs))
                        if attached:
                            nats_spark.detach(spark)
        databricks_nats.flush(30)
        stats: dict[str, Any] = databricks_nats.stats()
        databricks_nats.shutdown()
    spark.stop()

    rows, out = [], {"reps": reps, "acked_events": stats["acked"], "results": {}}
    for key, t in times.items():
        off, on = median(t["off"]) * 1e3, median(t["on"]) * 1e3
        r = median(ratio(a, b) for a, b in zip(t["on"], t["off"], strict=True))
        gated = key.startswith("aggregation")
        rows.append(
            [
                key,
                f"{off:.1f} ms",
                f"{on:.1f} ms",
                f"{r:.3f}",
                f"<= {TARGET}" if gated else "-",
                verdict(r <= TARGET) if gated else "-",
            ]
        )
        out["results"][key] = {"without_ms": off, "with_ms": on, "ratio": r, "raw": t}
    print_table(
        ["job", "detached", "attached", "ratio", "target", "result"],
        rows,
        title=f"bench_spark (reps={reps}; medians; {stats['acked']} events acked)",
    )
    print(f"results: {write_results('bench_spark' + ('_quick' if args.quick else ''), out)}")


if __name__ == "__main__":
    main()
