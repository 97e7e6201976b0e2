"""P12: what OpenTelemetry metrics cost per event — emit() in the caller, and the publisher's work per event.

    python -m benchmarks.bench_otel            # ~1-2 minutes
    python -m benchmarks.bench_otel --quick

Three set-ups, each in a fresh process (a process has one global MeterProvider), rotated over rounds against
one real nats-server (JetStream, file storage):

* ``off``: ``otel_metrics = false`` — nothing is measured (the baseline);
* ``api``: metrics on, no SDK provider installed (the OpenTelemetry API's default: what a runtime with MLflow 3
  and no collector has);
* ``sdk``: the real SDK's MeterProvider with a reader collecting every 100 ms (an exporter's worst case).

Per set-up: emit() caller cost (``perf_counter_ns`` around each call, median and p99) and acked throughput
(emit N, flush; the worker's per-event work, including the per-source counting, shows up here). The cost of
recording per event is (time per event with metrics - without). Targets: recording <= 1 us per event; emit
median <= 10 us. Results: a table and ``benchmarks/results/bench_otel.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

from benchmarks._common import median, percentile, print_table, ratio, verdict, write_results
from databricks_nats.testing import NatsServer

SETUPS = ("off", "api", "sdk")
RECORD_TARGET_US = 1.0
EMIT_TARGET_US = 10.0

_CHILD = r"""
import json, sys, tempfile, threading, time
setup, url, n_cost, n_tp, env = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if setup == "sdk":
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    def collect():
        while True:
            time.sleep(0.1)
            reader.get_metrics_data()
    threading.Thread(target=collect, daemon=True).start()
import databricks_nats as dn
dn.configure(url=url, spool_dir=tempfile.mkdtemp(), workspace="bench", env=env, otel_metrics=(setup != "off"))
data = {"experiment_id": "1", "run_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "metrics": {"loss": 0.42}, "points": 1,
        "final": False}
dn.emit("mlflow.run.metrics", data); assert dn.flush(30).ok
costs = []
ns = time.perf_counter_ns
for i in range(n_cost):
    t0 = ns(); dn.emit("mlflow.run.metrics", data); costs.append(ns() - t0)
    if i % 1000 == 999:
        assert dn.flush(60).ok
assert dn.flush(60).ok
t0 = time.perf_counter()
for _ in range(n_tp):
    dn.emit("mlflow.run.metrics", data)
assert dn.flush(120).ok
elapsed = time.perf_counter() - t0
print(json.dumps({"costs": costs, "elapsed": elapsed, "n": n_tp}))
dn.shutdown()
"""


def _run(setup: str, url: str, n_cost: int, n_tp: int, env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, setup, url, str(n_cost), str(n_tp), env],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{setup}: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, n_cost, n_tp = (2, 5_000, 20_000) if args.quick else (4, 20_000, 60_000)
    costs: dict[str, list[float]] = {s: [] for s in SETUPS}
    per_event: dict[str, list[float]] = {s: [] for s in SETUPS}
    with NatsServer(store_dir=tempfile.mkdtemp(prefix="bench-otel-js-")) as server:
        for r in range(rounds):
            for k in range(len(SETUPS)):
                setup = SETUPS[(r + k) % len(SETUPS)]  # rotate the order every round
                got = _run(setup, server.url, n_cost, n_tp, f"otel{r}{setup}")
                costs[setup] += [c / 1000 for c in got["costs"]]
                per_event[setup].append(got["elapsed"] / got["n"] * 1e6)
    rows = []
    base = median(per_event["off"])
    results: dict[str, dict[str, float]] = {}
    for s in SETUPS:
        us = median(per_event[s])
        results[s] = {
            "emit_median_us": median(costs[s]),
            "emit_p99_us": percentile(costs[s], 99),
            "us_per_event_acked": us,
            "recording_us_per_event": us - base,
            "throughput_ratio_vs_off": ratio(base, us),
        }
        rows.append(
            [
                s,
                f"{results[s]['emit_median_us']:.2f}",
                f"{results[s]['emit_p99_us']:.2f}",
                f"{us:.2f}",
                f"{us - base:+.2f}",
                f"{ratio(base, us):.3f}",
            ]
        )
    print_table(["setup", "emit median us", "emit p99 us", "us/event acked", "recording us/event", "vs off"], rows)
    worst = max(results["api"]["recording_us_per_event"], results["sdk"]["recording_us_per_event"])
    print(f"recording cost {worst:.2f} us/event (target <= {RECORD_TARGET_US}): {verdict(worst <= RECORD_TARGET_US)}")
    emit = max(results[s]["emit_median_us"] for s in SETUPS)
    print(f"emit median {emit:.2f} us (target <= {EMIT_TARGET_US}): {verdict(emit <= EMIT_TARGET_US)}")
    write_results("bench_otel_quick" if args.quick else "bench_otel", {"rounds": rounds, "results": results})


if __name__ == "__main__":
    main()
