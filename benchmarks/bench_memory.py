"""Memory during an outage (P5): RSS growth while 1M events are emitted with NATS unreachable.

Run: ``python -m benchmarks.bench_memory [--quick]`` (quick: 200k events). A fresh child process (so nothing
else is in its heap) configures the publisher against a port with nothing listening, takes its VmRSS
(``/proc/self/status``) as the baseline after one event, then emits N small metric events in a tight loop,
sampling VmRSS every 10k events; it backs off only while the in-process queue is more than half of
``queue_max_events`` (a real training loop is never that fast; without it the excess would be dropped and
counted, ``dropped.queue_full``). The publisher must keep at most ``memory_max_events`` in memory and spill
the rest to its SQLite spool; the run waits (at most 600 s) until every event is written. Reported:
baseline, peak (max sample and VmHWM), growth = peak - baseline,
events on disk, dropped. Target: growth <= 64 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks._common import print_table, verdict, write_results

TARGET_MB = 64.0

_CHILD = r"""
import json, socket, sys, time

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB -> MB
    return float("nan")

n, spool_dir = int(sys.argv[1]), sys.argv[2]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
import databricks_nats as dn
settings = dn.configure(url=f"nats://127.0.0.1:{port}", spool_dir=spool_dir, workspace="bench", env="memory",
                        spool_max_bytes=8 * 1024**3)
data = {"experiment_id": "1234567890", "run_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "metrics": {"loss": 0.4231, "accuracy": 0.8812, "lr": 0.0003}, "points": 3, "final": False}
dn.emit("mlflow.run.metrics", data)
time.sleep(1.0)
baseline = status("VmRSS")
peak, backoffs = baseline, 0
half = settings.queue_max_events // 2
t0 = time.monotonic()
for i in range(n):
    dn.emit("mlflow.run.metrics", data)
    if i % 10_000 == 0:
        peak = max(peak, status("VmRSS"))
        while dn.stats()["queue_depth"] > half:
            backoffs += 1
            time.sleep(0.01)
emit_s = time.monotonic() - t0
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    st = dn.stats()
    peak = max(peak, status("VmRSS"))
    if st["queue_depth"] == 0 and st["unsaved"] == 0 and st["spooled"] >= st["emitted"]:
        break
    time.sleep(0.2)
drain_s = time.monotonic() - t0
st = dn.stats()
print(json.dumps({"baseline_mb": baseline, "peak_mb": peak, "hwm_mb": status("VmHWM"), "end_mb": status("VmRSS"),
                  "emit_s": emit_s, "drain_s": drain_s, "backoffs": backoffs, "emitted": st["emitted"],
                  "secured": st["secured"], "spooled": st["spooled"], "in_memory": st["in_memory"],
                  "spool_bytes": st["spool_bytes"],
                  "dropped": st["dropped"], "memory_max_events": settings.memory_max_events}), flush=True)
import os
os._exit(0)  # skip the exit flush: nothing can be delivered
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-n", type=int, default=None, help="events (default 1,000,000; quick 200,000)")
    args = parser.parse_args()
    n = args.n or (200_000 if args.quick else 1_000_000)
    tmp = tempfile.mkdtemp(prefix="bench-memory-")
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(n), tmp], capture_output=True, text=True, timeout=1800, check=False
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    peak = max(r["peak_mb"], r["hwm_mb"])
    growth = peak - r["baseline_mb"]
    dropped = sum(r["dropped"].values())
    on_disk = r["spooled"] >= r["emitted"]
    ok = growth <= TARGET_MB and dropped == 0 and on_disk
    print_table(
        ["measure", "value"],
        [
            ["events emitted during the outage", r["emitted"]],
            ["emit loop / until all on disk", f"{r['emit_s']:.1f} s / {r['drain_s']:.1f} s"],
            ["RSS baseline / peak / end", f"{r['baseline_mb']:.1f} / {peak:.1f} / {r['end_mb']:.1f} MB"],
            ["RSS growth (peak - baseline)", f"{growth:.1f} MB (target <= {TARGET_MB:.0f} MB): {verdict(ok)}"],
            [
                "spooled / secured / spool size",
                f"{r['spooled']:,} / {r['secured']:,} / {r['spool_bytes'] / 2**20:.0f} MiB",
            ],
            ["dropped / queue back-offs", f"{dropped} / {r['backoffs']}"],
        ],
        title=f"bench_memory (P5; NATS unreachable, {n:,} events, memory_max_events={r['memory_max_events']:,})",
    )
    data = {
        "mode": "quick" if args.quick else "full",
        "elapsed_s": time.monotonic() - started,
        "events": n,
        **r,
        "growth_mb": growth,
        "target_mb": TARGET_MB,
        "met": ok,
        "summary": [
            {
                "id": "P5",
                "measure": f"RSS growth, {n:,} events during an outage",
                "value": f"{growth:.1f} MB",
                "target": f"<= {TARGET_MB:.0f} MB",
                "met": ok,
            }
        ],
    }
    print(f"results: {write_results('bench_memory' + ('_quick' if args.quick else ''), data)}")


if __name__ == "__main__":
    main()
