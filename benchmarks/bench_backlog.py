"""P7 benchmark: a spooled backlog drains at close to the live JetStream rate without starving new events.

    python -m benchmarks.bench_backlog            # 200,000-event backlog
    python -m benchmarks.bench_backlog --quick    # 40,000-event backlog
    python -m benchmarks.bench_backlog -n 100000

One process, one real ``nats-server`` (JetStream, file storage), the library's own publisher:

1. Live rate: the library emits N events to a connected publisher and flushes (acked events/s), as
   bench_core's JetStream ``lib`` side does; the median of ``--reps`` runs.
2. Backlog: a publisher that cannot reach NATS spools N events and closes (as after an outage, or a
   process that died); a new publisher on that spool replays them. While it drains, a thread emits new
   events at ``--live-rate`` per second, each carrying its emit time (``CLOCK_MONOTONIC``); a core NATS
   subscriber (its own connection and thread) receives every event the server takes and records, for the
   new ones, the time from emit to receipt. Drain rate: (backlog + new events) / (start of the replaying
   publisher → its flush returning ok).

Targets (P7): drain rate / live rate >= 0.8, and the new events' p99 emit → server <= 1 s.

Results: a table on stdout and ``benchmarks/results/bench_backlog.json`` (``bench_backlog_quick.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import threading
import time
from typing import Any

import nats

from benchmarks._common import median, percentile, print_table, ratio, verdict, write_results
from databricks_nats import _api
from databricks_nats.model.events import new_event
from databricks_nats.settings import resolve_settings
from databricks_nats.testing import NatsServer

EVENT_TYPE = "mlflow.run.metrics"
DATA: dict[str, Any] = {
    "experiment_id": "1234567890",
    "run_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "metrics": {"loss": 0.4231, "accuracy": 0.8812, "lr": 0.0003},
    "points": 3,
    "final": False,
}
RATE_TARGET = 0.8
P99_TARGET_MS = 1000.0


def _settings(url: str, spool: str, env: str, **kw: Any) -> Any:
    return resolve_settings(environ={}, spark_conf={}, url=url, spool_dir=spool, workspace="bench", env=env, **kw)


def live_rate(url: str, n: int, env: str) -> float:
    """Acked events/s of the library, connected: emit n, flush."""
    spool = tempfile.mkdtemp(prefix="dbx-nats-bench-backlog-")
    pub = _api.build_transport(_settings(url, spool, env))
    try:
        pub.emit(new_event(EVENT_TYPE, DATA))
        if not pub.flush(30).ok:
            raise RuntimeError("warm-up flush failed")
        t0 = time.perf_counter()
        for _ in range(n):
            pub.emit(new_event(EVENT_TYPE, DATA))
        if not pub.flush(300).ok:
            raise RuntimeError(f"flush failed: {pub.stats()}")
        return n / (time.perf_counter() - t0)
    finally:
        pub.close()
        shutil.rmtree(spool, ignore_errors=True)


class Receiver:
    """A core subscriber on its own thread: the receipt time of every new (``run_id == "live"``) event."""

    def __init__(self, url: str, subject: str) -> None:
        self.latencies: list[float] = []
        self.received = 0
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(url, subject)), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("subscriber did not start")

    async def _run(self, url: str, subject: str) -> None:
        nc = await nats.connect(url)

        async def on_msg(msg: Any) -> None:
            self.received += 1
            if b'"live"' in msg.data:
                now = time.monotonic()
                data = json.loads(msg.data)["data"]
                self.latencies.append(now - data["emitted_at"])

        await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30)
        await nc.flush()
        self._ready.set()
        while not self._stop.is_set():
            await asyncio.sleep(0.05)
        await nc.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def backlog_run(url: str, n: int, env: str, rate: float) -> dict[str, Any]:
    """Spool n events offline, replay them with a new publisher while new events are emitted at ``rate``/s."""
    spool = tempfile.mkdtemp(prefix="dbx-nats-bench-backlog-")
    try:
        offline = _api.build_transport(_settings("nats://127.0.0.1:1", spool, env, connect_timeout=0.2))
        for i in range(n):
            offline.emit(new_event(EVENT_TYPE, DATA))
            if not i % 10_000:  # never beyond queue_max_events: the backlog is all on disk, none dropped
                while offline.stats()["queue_depth"] > 20_000:
                    time.sleep(0.01)
        offline.flush(0.1)
        if offline.stats()["dropped_total"]:
            raise RuntimeError(f"the backlog lost events while spooling: {offline.stats()['dropped']}")
        offline.close(0)
        settings = _settings(url, spool, env)
        receiver = Receiver(url, f"{settings.namespace}.>")
        stop = threading.Event()
        emitted: list[int] = [0]
        t0 = time.perf_counter()
        pub = _api.build_transport(settings)
        replayed = pub.stats()["replayed"]

        def emit_live() -> None:
            interval = 1.0 / rate
            next_at = time.monotonic()
            while not stop.is_set():
                pub.emit(new_event(EVENT_TYPE, {**DATA, "run_id": "live", "emitted_at": time.monotonic()}))
                emitted[0] += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

        live = threading.Thread(target=emit_live, daemon=True)
        live.start()
        try:
            while pub.stats()["pending"] > 0.02 * n:  # new events keep coming while the backlog drains
                time.sleep(0.01)
            stop.set()
            live.join(10)
            ok = pub.flush(300).ok
            t1 = time.perf_counter()
            stats = pub.stats()
        finally:
            pub.close()
        deadline = time.monotonic() + 10
        while len(receiver.latencies) < emitted[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        receiver.stop()
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    if not ok:
        raise RuntimeError(f"flush failed: {stats}")
    lat_ms = [x * 1000 for x in receiver.latencies]
    return {
        "backlog": n,
        "replayed": replayed,
        "new_events": emitted[0],
        "new_received": len(lat_ms),
        "seconds": t1 - t0,
        "drain_events_per_s": (n + emitted[0]) / (t1 - t0),
        "new_p50_ms": percentile(lat_ms, 50),
        "new_p99_ms": percentile(lat_ms, 99),
        "new_max_ms": max(lat_ms) if lat_ms else float("nan"),
        "duplicates": stats["duplicates"],
        "dropped": stats["dropped"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 40,000-event backlog, fewer live runs")
    ap.add_argument("-n", type=int, default=None, help="backlog events (default 200000, quick 40000)")
    ap.add_argument("--live-n", type=int, default=None, help="events per live-rate run (default 50000, quick 10000)")
    ap.add_argument("--reps", type=int, default=None, help="live-rate runs (default 3, quick 2)")
    ap.add_argument("--live-rate", type=float, default=200.0, help="new events per second during the drain")
    args = ap.parse_args(argv)
    n = args.n or (40_000 if args.quick else 200_000)
    live_n = args.live_n or (10_000 if args.quick else 50_000)
    reps = args.reps or (2 if args.quick else 3)
    t_start = time.monotonic()
    with NatsServer() as srv:
        rates = []
        for i in range(reps):
            rates.append(live_rate(srv.url, live_n, f"live{i}"))
            print(f"  live rep {i}: {rates[-1]:,.0f} ev/s", flush=True)
        run = backlog_run(srv.url, n, "backlog", args.live_rate)
        print(f"  backlog: {json.dumps(run)}", flush=True)
    live = median(rates)
    drain_ratio = ratio(run["drain_events_per_s"], live)
    rate_met = drain_ratio >= RATE_TARGET
    p99_met = run["new_p99_ms"] <= P99_TARGET_MS and run["new_received"] == run["new_events"]
    rows = [
        ["backlog drain / live JetStream rate", f"{run['drain_events_per_s']:,.0f} / {live:,.0f} ev/s",
         f"{drain_ratio:.2f}", f">= {RATE_TARGET}", verdict(rate_met)],
        ["new events emit -> server, p50 / p99", f"{run['new_p50_ms']:.1f} / {run['new_p99_ms']:.1f} ms",
         f"{run['new_events']:,} events", f"p99 <= {P99_TARGET_MS:.0f} ms", verdict(p99_met)],
    ]  # fmt: skip
    print_table(
        ["measure", "value", "detail", "target", "result"],
        rows,
        title=f"bench_backlog ({'quick' if args.quick else 'full'}; backlog {n:,}, new events "
        f"{args.live_rate:g}/s; {time.monotonic() - t_start:.0f}s)",
    )
    summary = [
        {"id": "P7", "measure": "backlog drain / live JetStream rate", "value": f"{drain_ratio:.2f}",
         "target": f">= {RATE_TARGET}", "met": rate_met},
        {"id": "P7", "measure": "new events during the drain, p99 emit -> server",
         "value": f"{run['new_p99_ms']:.1f} ms", "target": f"<= {P99_TARGET_MS:.0f} ms", "met": p99_met},
    ]  # fmt: skip
    path = write_results(
        "bench_backlog_quick" if args.quick else "bench_backlog",
        {
            "mode": "quick" if args.quick else "full",
            "live_rates": rates,
            "live_rate": live,
            "backlog": run,
            "ratio": drain_ratio,
            "summary": summary,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
