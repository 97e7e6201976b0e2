"""MLflow hook overhead: ``mlflow.log_metric`` time with the hook / without, sync and async, side by side.

Run: ``python -m benchmarks.bench_mlflow [--quick]``. One real nats-server (JetStream) and one sqlite MLflow
store on tmpfs when the machine has one (disk flush times would otherwise drown what is measured). For each
mode (sync, async) one run logs blocks of calls, alternately without the hook and with it: ``uninstall()``
takes the wrappers off the cached store, so "without" is MLflow alone. Blocks come in pairs in alternating
order (off/on, then on/off), so the growth of the sqlite tables and machine drift favour neither side; async
blocks end with an untimed ``flush_async_logging()`` so one block's queued work never lands in the next.
The ratio is the median of the per-pair ratios; the medians of per-call times are shown beside it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

from benchmarks._common import machine, median, print_table, ratio, verdict, write_results

TARGETS = {"sync": 1.02, "async": 1.10}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    block, pairs = (50, 20) if args.quick else (50, 80)
    warnings.filterwarnings("ignore")

    import mlflow

    import databricks_nats
    import databricks_nats.integrations.mlflow as hook
    from databricks_nats.testing import NatsServer

    tmp = tempfile.mkdtemp(prefix="bench-mlflow-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    results: dict[str, dict[str, list[float]]] = {m: {"off": [], "on": []} for m in TARGETS}
    with NatsServer() as srv:
        databricks_nats.configure(url=srv.url, spool_dir=os.path.join(tmp, "spool"), workspace="bench", env="mlflow")

        def timed_block(hooked: bool, synchronous: bool, step: int) -> float:
            (hook.install if hooked else hook.uninstall)()
            mlflow.log_metric("warm", 0.0, step=step, synchronous=synchronous)  # first call re-wraps the store
            t0 = time.perf_counter()
            for i in range(step, step + block):
                mlflow.log_metric("loss", 1.0 / (i + 1), step=i, synchronous=synchronous)
            elapsed = time.perf_counter() - t0
            if not synchronous:
                mlflow.flush_async_logging()
            return elapsed / block * 1e6

        for mode in TARGETS:
            sync = mode == "sync"
            with mlflow.start_run():
                for i in range(3 * block):  # warm-up: connection pool, caches, the async queue's thread
                    mlflow.log_metric("loss", 0.0, step=i, synchronous=sync)
                step = 3 * block
                for p in range(pairs):
                    for side in ("off", "on") if p % 2 == 0 else ("on", "off"):
                        results[mode][side].append(timed_block(side == "on", sync, step))
                        step += block
        hook.uninstall()
        databricks_nats.flush(30)
        stats = databricks_nats.stats()
        databricks_nats.shutdown()

    rows = []
    out = {"machine": machine(), "block": block, "pairs": pairs, "acked_events": stats["acked"], "results": {}}
    for mode, target in TARGETS.items():
        on_us, off_us = results[mode]["on"], results[mode]["off"]
        off, on = median(off_us), median(on_us)
        r = median(ratio(a, b) for a, b in zip(on_us, off_us, strict=True))
        rows.append(
            [f"log_metric {mode}", f"{off:.1f} us", f"{on:.1f} us", f"{r:.3f}", f"<= {target}", verdict(r <= target)]
        )
        out["results"][mode] = {"without_us": off, "with_us": on, "ratio": r, "target": target, "raw": results[mode]}
    print_table(
        ["measure", "without hook", "with hook", "ratio", "target", "result"],
        rows,
        title=f"bench_mlflow ({pairs} pairs of {block}-call blocks; {stats['acked']} events acked)",
    )
    print(f"results: {write_results('bench_mlflow' + ('_quick' if args.quick else ''), out)}")


if __name__ == "__main__":
    main()
