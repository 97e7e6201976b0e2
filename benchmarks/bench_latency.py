"""End-to-end latency (P3): ``emit()`` → a subscriber's receipt, and ``mlflow.log_metric`` → receipt.

Run: ``python -m benchmarks.bench_latency [--quick]``. One real nats-server (JetStream, file storage) on
loopback; the subscriber is a separate process (plain nats-py core subscription on the namespace), as a
consumer would be. Each event carries the sender's ``time.monotonic()`` at the start of the call
(``data.t0`` for ``emit``; the logged metric's value for MLflow); the subscriber subtracts it from its own
``time.monotonic()`` at receipt — CLOCK_MONOTONIC is system-wide on Linux, so both processes share it.
Events are paced (one every ``--interval`` ms), so this is latency under light load, not throughput.
The MLflow case uses ``metrics_mode="every"`` (the default ``coalesce`` holds metrics for up to
``metrics_interval`` by design) with the sqlite store on tmpfs where there is one. The hook publishes only
after MLflow's own call succeeded, so its latency is measured from that moment (call start + the call's
own duration, per step) to receipt; the time from the call's start, MLflow's own write included, is shown
as information.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Any

from benchmarks._common import median, percentile, print_table, verdict, write_results

P50_TARGET_MS = 2.0
P99_TARGET_MS = 10.0

_SUBSCRIBER = r"""
import asyncio, json, sys, time
import nats

async def main(url, subject, expected, timeout):
    nc = await nats.connect(url)
    out = {"emit": [], "mlflow": [], "mlflow_steps": []}
    done = asyncio.Event()

    async def on_msg(msg):
        now = time.monotonic()
        data = json.loads(msg.data).get("data", {})
        if "t0" in data:
            out["emit"].append(now - data["t0"])
        elif "t0" in data.get("metrics", {}):
            out["mlflow"].append(now - data["metrics"]["t0"]["value"])
            out["mlflow_steps"].append(data["metrics"]["t0"]["step"])
        if len(out["emit"]) + len(out["mlflow"]) >= expected:
            done.set()

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    print("ready", flush=True)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    await nc.close()
    print(json.dumps(out), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
"""


def _stats_ms(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": median(ms),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--interval", type=float, default=2.0, help="ms between events (default 2)")
    args = parser.parse_args()
    n_emit, n_mlflow = (300, 100) if args.quick else (3000, 500)
    interval = args.interval / 1000
    warnings.filterwarnings("ignore")

    import mlflow

    import databricks_nats as dn
    from databricks_nats.integrations import mlflow as nats_mlflow
    from databricks_nats.testing import NatsServer

    tmp = tempfile.mkdtemp(prefix="bench-latency-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    mlflow.set_experiment("latency")
    started = time.monotonic()
    with NatsServer() as srv:
        settings = dn.configure(
            url=srv.url,
            spool_dir=os.path.join(tmp, "spool"),
            workspace="bench",
            env="latency",
            metrics_mode="every",
        )
        dn.emit("bench.latency.warmup", {}, keys=["w"])  # connect, create the stream
        if not dn.flush(30).ok:
            raise RuntimeError(f"warm-up failed: {dn.stats()}")
        sub = subprocess.Popen(
            [sys.executable, "-c", _SUBSCRIBER, srv.url, f"{settings.namespace}.>", str(n_emit + n_mlflow), "120"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert sub.stdout is not None
            if sub.stdout.readline().strip() != "ready":
                raise RuntimeError("subscriber did not start")
            for _ in range(n_emit):
                dn.emit("bench.latency.probe", {"t0": time.monotonic()}, keys=["p"])
                time.sleep(interval)
            nats_mlflow.install()
            call_s: list[float] = []
            with mlflow.start_run():
                for step in range(n_mlflow):
                    t0 = time.monotonic()
                    mlflow.log_metric("t0", t0, step=step)
                    call_s.append(time.monotonic() - t0)
                    time.sleep(interval)
            nats_mlflow.uninstall()
            dn.flush(30)
            out, _ = sub.communicate(timeout=150)
        finally:
            if sub.poll() is None:
                sub.terminate()
                try:
                    sub.wait(5)
                except subprocess.TimeoutExpired:
                    sub.kill()
                    sub.wait()
        stats = dn.stats()
        dn.shutdown()
    received = json.loads(out.strip().splitlines()[-1])

    emit_lat, from_call = _stats_ms(received["emit"]), _stats_ms(received["mlflow"])
    stored = [lat - call_s[step] for lat, step in zip(received["mlflow"], received["mlflow_steps"], strict=True)]
    mlflow_lat = _stats_ms(stored)
    call = _stats_ms(call_s)
    summary = []
    rows = []
    for pid, name, lat, sent in (
        ("P3", "emit -> receipt", emit_lat, n_emit),
        ("P3", "mlflow.log_metric stored -> receipt", mlflow_lat, n_mlflow),
    ):
        ok50, ok99 = lat["p50_ms"] <= P50_TARGET_MS, lat["p99_ms"] <= P99_TARGET_MS
        rows.append(
            [
                name,
                f"{lat['n']}/{sent}",
                f"{lat['p50_ms']:.2f} ms",
                f"{lat['p99_ms']:.2f} ms",
                f"{lat['max_ms']:.1f} ms",
                f"p50 <= {P50_TARGET_MS}, p99 <= {P99_TARGET_MS}",
                verdict(ok50 and ok99 and lat["n"] == sent),
            ]
        )
        summary.append(
            {
                "id": pid,
                "measure": f"{name} p50 / p99",
                "value": f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} ms",
                "target": f"<= {P50_TARGET_MS} / <= {P99_TARGET_MS} ms",
                "met": ok50 and ok99 and lat["n"] == sent,
            }
        )
    for name, lat in (("(log_metric start -> receipt)", from_call), ("(log_metric call itself)", call)):
        rows.append([name, f"{lat['n']}", f"{lat['p50_ms']:.2f} ms", f"{lat['p99_ms']:.2f} ms",
                     f"{lat['max_ms']:.1f} ms", "-", "info"])  # fmt: skip
    print_table(
        ["path", "received", "p50", "p99", "max", "target", "result"],
        rows,
        title=f"bench_latency (loopback, one event every {args.interval} ms; subscriber in its own process)",
    )
    data = {
        "mode": "quick" if args.quick else "full",
        "elapsed_s": time.monotonic() - started,
        "interval_ms": args.interval,
        "emit": emit_lat,
        "mlflow": mlflow_lat,
        "mlflow_from_call_start": from_call,
        "mlflow_call": call,
        "publisher_ack_latency_ms": stats["ack_latency_ms"],
        "summary": summary,
    }
    print(f"results: {write_results('bench_latency' + ('_quick' if args.quick else ''), data)}")


if __name__ == "__main__":
    main()
