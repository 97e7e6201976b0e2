"""Run every benchmark and print one table; also written to ``benchmarks/results/all.json``.

    python -m benchmarks                 # every benchmark, full size (all.json)
    python -m benchmarks --quick         # smaller sizes, passed through (all_quick.json)
    python -m benchmarks --only latency,idle,backlog

Each benchmark runs in its own process (``python -m benchmarks.bench_<name>``), one after the other, so
none disturbs another; its own table is shown as it runs and its JSON is read back afterwards. A benchmark
that fails is reported as such and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks._common import RESULTS_DIR, print_table, verdict, write_results

BENCHES = (
    "core",
    "mlflow",
    "spark",
    "latency",
    "memory",
    "idle",
    "backlog",
    "durability",
    "callout",
    "webhooks",
    "otel",
    "tracing",
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(pid: str, measure: str, value: str, target: str, met: Any) -> dict[str, Any]:
    return {"id": pid, "measure": measure, "value": value, "target": target, "met": met}


def summarize(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Summary rows of one benchmark's JSON: its own ``summary`` if it has one, else read from known keys."""
    if isinstance(data.get("summary"), list):
        return list(data["summary"])
    rows: list[dict[str, Any]] = []
    if name == "core":
        emit = data.get("emit_cost") or {}
        if emit:
            rows.append(_row("P1", "emit() caller cost, median", f"{emit.get('median_us', float('nan')):.2f} us",
                             f"<= {emit.get('target_us')} us", emit.get("met")))  # fmt: skip
        for key, what in (("jetstream", "JetStream acked events/s, lib / raw"), ("core", "core events/s, lib / raw")):
            part = data.get(key) or {}
            if part:
                rows.append(_row("P2", what, f"{part.get('ratio', float('nan')):.2f}", f">= {part.get('target')}",
                                 part.get("met")))  # fmt: skip
    elif name in ("mlflow", "spark"):
        pid = "P1" if name == "mlflow" else "P4"
        for measure, r in (data.get("results") or {}).items():
            target = r.get("target")
            if target is None and name == "spark" and measure.startswith("aggregation"):
                target = 1.03  # bench_spark's TARGET (the aggregation only; the tiny job is information)
            ratio = r.get("ratio", float("nan"))
            label = f"log_metric {measure}, with / without hook" if name == "mlflow" else f"{measure}, with / without"
            met = r.get("met", ratio <= target if target is not None else None)
            rows.append(_row(pid, label, f"{ratio:.3f}", f"<= {target}" if target is not None else "-", met))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (passed to every benchmark)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHES)}")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark (default 3600)")
    args = parser.parse_args()
    chosen = [b.strip() for b in args.only.split(",") if b.strip()] or list(BENCHES)
    unknown = sorted(set(chosen) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    suffix = "_quick" if args.quick else ""

    runs: dict[str, dict[str, Any]] = {}
    rows: list[list[Any]] = []
    for name in chosen:
        module = f"benchmarks.bench_{name}"
        print(f"\n=== {module}{' --quick' if args.quick else ''}", flush=True)
        result_path = os.path.join(RESULTS_DIR, f"bench_{name}{suffix}.json")
        before = os.path.getmtime(result_path) if os.path.exists(result_path) else None
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", module, *(["--quick"] if args.quick else [])],
                cwd=ROOT,
                timeout=args.timeout,
                check=False,
            )
            rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        elapsed = time.monotonic() - t0
        fresh = os.path.exists(result_path) and os.path.getmtime(result_path) != before
        data: dict[str, Any] = {}
        if rc == 0 and fresh:
            with open(result_path) as f:
                data = json.load(f)
        summary = summarize(name, data) if data else []
        runs[name] = {"returncode": rc, "elapsed_s": elapsed, "results_file": result_path if data else None,
                      "summary": summary}  # fmt: skip
        if not summary:
            rows.append(
                ["-", name, f"failed (exit {rc})" if rc != 0 else "no results", "-", "NOT MET", f"{elapsed:.0f}"]
            )
        for s in summary:
            met = s.get("met")
            rows.append([s["id"], f"{name}: {s['measure']}", s["value"], s["target"],
                         "-" if met is None else verdict(bool(met)), f"{elapsed:.0f}"])  # fmt: skip

    print_table(
        ["id", "measure", "value", "target", "result", "bench s"],
        rows,
        title=f"all benchmarks ({'quick' if args.quick else 'full'})",
    )
    path = write_results("all" + suffix, {"mode": "quick" if args.quick else "full", "benchmarks": runs})
    print(f"results: {path}")
    if any(r["returncode"] != 0 for r in runs.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
