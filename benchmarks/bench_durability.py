"""Durability modes: what ``spool_sync="immediate"`` costs per event next to the default write-behind.

    python -m benchmarks.bench_durability            # full
    python -m benchmarks.bench_durability --quick    # fewer events and repetitions

Both modes are measured side by side (alternating order, medians of the repetitions), with a fresh
spool directory each run:

* **caller cost** of ``emit()`` per event (median and p99 of single timed calls), NATS connected;
* the same with NATS **unreachable** (every event goes to the spool; write-behind writes bursts from the
  worker, immediate writes one row per event in the caller);
* **throughput**: events emitted in a burst until all are acknowledged (events/s).

``write-behind`` may lose the last 50 ms of events on SIGKILL; ``immediate`` loses none (an
``os._exit``/SIGKILL after ``emit`` returns keeps the event: it is committed to the WAL, no ``fsync``).
Results: a table on stdout and ``benchmarks/results/bench_durability.json`` (``_quick`` with --quick).
"""

from __future__ import annotations

import argparse
import gc
import shutil
import socket
import tempfile
import time
import uuid
from typing import Any

import databricks_nats as dn
from benchmarks._common import median, percentile, print_table, ratio, write_results
from databricks_nats.testing import NatsServer

EVENT_TYPE = "mlflow.run.metrics"
DATA: dict[str, Any] = {
    "experiment_id": "1234567890",
    "run_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "metrics": {"loss": 0.4231, "accuracy": 0.8812, "lr": 0.0003},
    "points": 3,
    "final": False,
}
MODES = ("write-behind", "immediate")


def _refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"nats://127.0.0.1:{s.getsockname()[1]}"


def _run(url: str, mode: str, n: int, connected: bool) -> dict[str, Any]:
    """One run: ``n`` single timed emits (then, when connected, the time until all are acknowledged)."""
    spool = tempfile.mkdtemp(prefix="bench-durability-")
    dn.configure(url=url, spool_dir=spool, workspace="bench", env=f"d{uuid.uuid4().hex[:8]}", spool_sync=mode,
                 detect_context=False, connect_timeout=0.5)  # fmt: skip
    try:
        if connected and not dn.flush(30).ok:
            raise RuntimeError("not connected")
        for _ in range(200):  # warm up: the encoder's caches, the first row
            dn.emit(EVENT_TYPE, DATA)
        if connected:
            dn.flush(30)
        pc = time.perf_counter_ns
        samples = [0] * n
        emit = dn.emit
        gc.collect()
        start = time.perf_counter()
        for i in range(n):
            t0 = pc()
            emit(EVENT_TYPE, DATA)
            samples[i] = pc() - t0
        emitted = time.perf_counter() - start
        acked_s = None
        if connected:
            if not dn.flush(120).ok:
                raise RuntimeError(f"flush failed: {dn.stats()}")
            acked_s = time.perf_counter() - start
        stats = dn.stats()
    finally:
        dn.shutdown(timeout=0 if not connected else 5)
        shutil.rmtree(spool, ignore_errors=True)
    return {
        "median_us": median(samples) / 1000,
        "p99_us": percentile(samples, 99) / 1000,
        "emit_loop_s": emitted,
        "events_per_s": n / acked_s if acked_s else None,
        "spooled": stats["spooled"],
        "dropped": stats["dropped"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer events and repetitions")
    args = ap.parse_args(argv)
    n, reps = (5_000, 3) if args.quick else (20_000, 5)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {"connected": {m: [] for m in MODES}, "unreachable": {}}
    runs["unreachable"] = {m: [] for m in MODES}
    with NatsServer() as server:
        for rep in range(reps):
            order = MODES if rep % 2 == 0 else MODES[::-1]
            for mode in order:
                runs["connected"][mode].append(_run(server.url, mode, n, connected=True))
            for mode in order:
                runs["unreachable"][mode].append(_run(_refused_url(), mode, n, connected=False))

    def agg(case: str, mode: str, key: str) -> float:
        return median(r[key] for r in runs[case][mode] if r[key] is not None)

    results: dict[str, Any] = {}
    rows = []
    for case in ("connected", "unreachable"):
        for key, label in (("median_us", "emit() median"), ("p99_us", "emit() p99")):
            wb, im = agg(case, "write-behind", key), agg(case, "immediate", key)
            results[f"{case}_{key}"] = {"write-behind": wb, "immediate": im, "extra_us": im - wb}
            rows.append([f"{label}, NATS {case}", f"{wb:.2f} us", f"{im:.2f} us", f"+{im - wb:.2f} us"])
    wb_tp, im_tp = agg("connected", "write-behind", "events_per_s"), agg("connected", "immediate", "events_per_s")
    results["throughput"] = {"write-behind": wb_tp, "immediate": im_tp, "ratio": ratio(im_tp, wb_tp)}
    rows.append(["acked events/s (burst, connected)", f"{wb_tp:,.0f}", f"{im_tp:,.0f}", f"x{ratio(im_tp, wb_tp):.2f}"])
    print_table(["measure", "write-behind", "immediate", "immediate costs"], rows,
                title=f"bench_durability ({'quick' if args.quick else 'full'}; n={n:,}, reps={reps})")  # fmt: skip
    med = results["connected_median_us"]
    summary = [
        {"id": "D1", "measure": "emit() median, write-behind / immediate (connected)",
         "value": f"{med['write-behind']:.2f} / {med['immediate']:.2f} us", "target": "-", "met": None},
        {"id": "D1", "measure": "emit() median, write-behind / immediate (NATS unreachable)",
         "value": f"{results['unreachable_median_us']['write-behind']:.2f} / "
                  f"{results['unreachable_median_us']['immediate']:.2f} us", "target": "-", "met": None},
        {"id": "D1", "measure": "acked events/s, immediate / write-behind",
         "value": f"{results['throughput']['ratio']:.2f} ({im_tp:,.0f} / {wb_tp:,.0f})", "target": "-", "met": None},
    ]  # fmt: skip
    path = write_results(
        "bench_durability_quick" if args.quick else "bench_durability",
        {
            "mode": "quick" if args.quick else "full",
            "n": n,
            "reps": reps,
            "results": results,
            "runs": runs,
            "summary": summary,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
