"""Import time and idle cost (P6).

Run: ``python -m benchmarks.bench_idle [--quick]``.

1. ``python -c "import databricks_nats"`` wall time minus ``python -c pass``, both run as fresh subprocesses,
   alternating, median of several runs each. Target: <= 50 ms.
2. Idle worker CPU: a child process configures the publisher against a real nats-server, emits one event,
   flushes, then sleeps for the window (10 s; quick 5 s) while its own CPU time (user + system of all its
   threads, ``resource.getrusage``) is taken before and after. Target: ~0 (here: <= 1% of the window, i.e.
   <= 100 ms of CPU per 10 s). The same with NATS unreachable (reconnect back-off) is shown for information.
3. Zero-code's share of ``import mlflow`` (information): ``python -c "import mlflow"`` with
   ``DATABRICKS_NATS_URL`` set (the hook is installed, deferred, during the import) minus the same without it
   (the entry point only looks for its settings), alternating, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks._common import median, print_table, verdict, write_results

IMPORT_TARGET_MS = 50.0
IDLE_TARGET_FRACTION = 0.01

_IDLE = r"""
import json, resource, socket, sys, time
url, spool, window = sys.argv[1], sys.argv[2], float(sys.argv[3])
if url == "unreachable":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{s.getsockname()[1]}"
import databricks_nats as dn
dn.configure(url=url, spool_dir=spool, workspace="bench", env="idle")
dn.emit("bench.idle.ping", {"x": 1}, keys=["k"])
flushed = dn.flush(5).ok
time.sleep(0.5)
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0, t0 = cpu(), time.monotonic()
time.sleep(window)
c1, t1 = cpu(), time.monotonic()
print(json.dumps({"cpu_s": c1 - c0, "wall_s": t1 - t0, "flushed": flushed, "connection": dn.stats()["connection"]}))
import os
os._exit(0)
"""


def _wall(code: str, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - t0


def _mlflow_import_share(runs: int) -> tuple[float, float]:
    """Medians (s) of ``import mlflow`` unconfigured and configured for zero-code, alternating."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_NATS_", "MLFLOW_"))}
    configured = {**base, "DATABRICKS_NATS_URL": "nats://127.0.0.1:4222"}
    _wall("import mlflow", configured)  # warm .pyc files
    off: list[float] = []
    on: list[float] = []
    for _ in range(runs):
        off.append(_wall("import mlflow", base))
        on.append(_wall("import mlflow", configured))
    return median(off), median(on)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs, window = (7, 5.0) if args.quick else (21, 10.0)
    started = time.monotonic()

    _wall("import databricks_nats")  # warm the page cache and .pyc files
    bare: list[float] = []
    lib: list[float] = []
    for _ in range(runs):
        bare.append(_wall("pass"))
        lib.append(_wall("import databricks_nats"))
    import_ms = (median(lib) - median(bare)) * 1000
    import_ok = import_ms <= IMPORT_TARGET_MS
    mlflow_off, mlflow_on = _mlflow_import_share(runs)

    from databricks_nats.testing import NatsServer

    idle: dict[str, dict[str, float]] = {}
    with NatsServer() as srv, tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        for label, url in (("connected", srv.url), ("unreachable", "unreachable")):
            spool = os.path.join(tmp, label)
            out = subprocess.run(
                [sys.executable, "-c", _IDLE, url, spool, str(window)],
                capture_output=True,
                text=True,
                timeout=window + 60,
                check=True,
            )
            idle[label] = json.loads(out.stdout.strip().splitlines()[-1])
    conn = idle["connected"]
    fraction = conn["cpu_s"] / conn["wall_s"]
    idle_ok = bool(conn["flushed"]) and fraction <= IDLE_TARGET_FRACTION
    unreach = idle["unreachable"]

    print_table(
        ["measure", "value", "target", "result"],
        [
            [
                "import databricks_nats (minus bare python)",
                f"{import_ms:.1f} ms",
                f"<= {IMPORT_TARGET_MS:.0f} ms",
                verdict(import_ok),
            ],
            [
                "  bare python / with import (medians)",
                f"{median(bare) * 1000:.1f} / {median(lib) * 1000:.1f} ms",
                "-",
                "",
            ],
            [
                "zero-code share of import mlflow (configured minus not)",
                f"{(mlflow_on - mlflow_off) * 1000:.1f} ms ({mlflow_off * 1000:.0f} / {mlflow_on * 1000:.0f} ms)",
                "-",
                "info",
            ],
            [
                f"idle CPU over {window:.0f} s, connected",
                f"{conn['cpu_s'] * 1000:.1f} ms ({fraction * 100:.3f}%)",
                f"<= {IDLE_TARGET_FRACTION * 100:.0f}%",
                verdict(idle_ok),
            ],
            [
                f"idle CPU over {window:.0f} s, NATS unreachable",
                f"{unreach['cpu_s'] * 1000:.1f} ms ({unreach['cpu_s'] / unreach['wall_s'] * 100:.3f}%)",
                "-",
                "info",
            ],
        ],
        title=f"bench_idle (P6; {runs} subprocess runs per side, alternating)",
    )
    data = {
        "mode": "quick" if args.quick else "full",
        "elapsed_s": time.monotonic() - started,
        "import": {"bare_s": bare, "with_import_s": lib, "difference_ms": import_ms, "target_ms": IMPORT_TARGET_MS},
        "idle": {"window_s": window, **idle, "target_fraction": IDLE_TARGET_FRACTION},
        "import_mlflow": {"unconfigured_s": mlflow_off, "configured_s": mlflow_on},
        "summary": [
            {
                "id": "P6",
                "measure": "import databricks_nats",
                "value": f"{import_ms:.1f} ms",
                "target": f"<= {IMPORT_TARGET_MS:.0f} ms",
                "met": import_ok,
            },
            {
                "id": "P6",
                "measure": f"idle worker CPU over {window:.0f} s",
                "value": f"{conn['cpu_s'] * 1000:.1f} ms",
                "target": f"~0 (<= {IDLE_TARGET_FRACTION * 100:.0f}%)",
                "met": idle_ok,
            },
        ],
    }
    print(f"results: {write_results('bench_idle' + ('_quick' if args.quick else ''), data)}")


if __name__ == "__main__":
    main()
