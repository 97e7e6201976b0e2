"""MLflow hook overhead: ``mlflow.log_metric`` time with the hook / without, sync and async, side by side.

Run: ``python -m benchmarks.bench_mlflow [--quick]``. One real nats-server (JetStream), one sqlite MLflow
store; each repetition alternates a run without the hook and a run with it (the hook is installed and
uninstalled between them), so both see the same machine state. Reports medians of per-call times.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

from benchmarks._common import machine, median, print_table, ratio, verdict, write_results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls, reps = (100, 3) if args.quick else (300, 5)
    warnings.filterwarnings("ignore")

    import mlflow

    import databricks_nats
    import databricks_nats.integrations.mlflow as hook
    from databricks_nats.testing import NatsServer

    tmp = tempfile.mkdtemp(prefix="bench-mlflow-")
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    with NatsServer() as srv:
        databricks_nats.configure(url=srv.url, spool_dir=os.path.join(tmp, "spool"), workspace="bench", env="mlflow")

        def per_call(synchronous: bool) -> float:
            with mlflow.start_run():
                t0 = time.perf_counter()
                for i in range(calls):
                    mlflow.log_metric("loss", 1.0 / (i + 1), step=i, synchronous=synchronous)
                elapsed = time.perf_counter() - t0
            return elapsed / calls * 1e6

        results: dict[str, dict[str, list[float]]] = {"sync": {"off": [], "on": []}, "async": {"off": [], "on": []}}
        for _ in range(reps):
            for mode, sync in (("sync", True), ("async", False)):
                hook.uninstall()
                results[mode]["off"].append(per_call(sync))
                hook.install()
                results[mode]["on"].append(per_call(sync))
        hook.uninstall()
        databricks_nats.flush(30)
        stats = databricks_nats.stats()
        databricks_nats.shutdown()

    targets = {"sync": 1.02, "async": 1.10}
    rows = []
    out = {"machine": machine(), "calls": calls, "reps": reps, "acked_events": stats["acked"], "results": {}}
    for mode in ("sync", "async"):
        off, on = median(results[mode]["off"]), median(results[mode]["on"])
        r = ratio(on, off)
        rows.append(
            [
                f"log_metric {mode}",
                f"{off:.1f} us",
                f"{on:.1f} us",
                f"{r:.3f}",
                f"<= {targets[mode]}",
                verdict(r <= targets[mode]),
            ]
        )
        out["results"][mode] = {
            "without_us": off,
            "with_us": on,
            "ratio": r,
            "target": targets[mode],
            "raw": results[mode],
        }
    print_table(
        ["measure", "without hook", "with hook", "ratio", "target", "result"],
        rows,
        title=f"bench_mlflow (calls={calls}, reps={reps}; medians; {stats['acked']} events acked)",
    )
    print(f"results: {write_results('bench_mlflow' + ('_quick' if args.quick else ''), out)}")


if __name__ == "__main__":
    main()
