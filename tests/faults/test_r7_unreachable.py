"""R7: NATS unreachable for the whole training loop; ``mlflow.log_metric`` never waits on the network.

Two kinds of unreachable, neither needing root: *refused* (a free loopback port, nothing listening: every
connect fails at once) and *blackholed* (a listening socket that never accepts, its accept queue filled, so
the kernel drops the client's SYNs and a connect hangs until its timeout, as with a firewall that drops).
The per-call time of ``mlflow.log_metric`` (sqlite store) is taken without and with the hook, alternating
blocks: no call may wait on the network (none as long as a connect timeout); the ratio of the medians is
printed for information only, since a busy machine makes any ratio noise. What the hook costs is measured by
the benchmarks (P1, ``benchmarks/bench_mlflow.py``), never asserted in a test.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import databricks_nats

mlflow = pytest.importorskip("mlflow")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CALLS = 60  # log_metric calls per block
REPS = 5  # blocks per side, alternating
CONNECT_TIMEOUT = 3.0


@contextlib.contextmanager
def refused() -> Iterator[str]:
    """A loopback port with nothing listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"nats://127.0.0.1:{port}"


@contextlib.contextmanager
def blackholed() -> Iterator[str]:
    """A port whose listener never accepts and whose accept queue is full: new connects hang (SYN dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError, OSError):
                s.connect(address)
            fillers.append(s)
        time.sleep(0.2)
        probe = socket.socket()
        probe.settimeout(1.0)
        try:
            probe.connect(address)
            hangs = False
        except TimeoutError:
            hangs = True
        finally:
            probe.close()
        if not hangs:
            pytest.skip("this kernel completes connects beyond the accept queue; cannot blackhole without root")
        yield f"nats://{address[0]}:{address[1]}"
    finally:
        for s in fillers:
            s.close()
        listener.close()


def _block(times: list[float]) -> None:
    """One run of CALLS log_metric calls, each timed on its own."""
    with mlflow.start_run():
        for step in range(CALLS):
            t0 = time.perf_counter()
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            times.append(time.perf_counter() - t0)


@pytest.mark.parametrize("unreachable", [refused, blackholed], ids=["refused", "blackholed"])
def test_training_loop_with_nats_unreachable_is_not_slowed_and_every_event_is_spooled(
    unreachable: Any, mlflow_sqlite: str, namespace: dict[str, str], tmp_path: Path
) -> None:
    """With NATS unreachable throughout, no log_metric call waits on the network, and every event is spooled."""
    from databricks_nats.integrations import mlflow as nats_mlflow

    warnings.filterwarnings("ignore")
    with unreachable() as url:
        databricks_nats.configure(
            url=url,
            spool_dir=str(tmp_path / "spool"),
            metrics_mode="every",  # one event per call: the most work the hook can do per call
            connect_timeout=CONNECT_TIMEOUT,
            **namespace,
        )
        off: list[float] = []
        on: list[float] = []
        _block([])  # warm-up: sqlite, MLflow's caches
        for _ in range(REPS):
            nats_mlflow.uninstall()
            _block(off)
            nats_mlflow.install()
            _block(on)
        nats_mlflow.uninstall()
        deadline = time.monotonic() + 10
        stats = databricks_nats.stats()
        while stats["secured"] < stats["emitted"] and time.monotonic() < deadline:
            time.sleep(0.05)
            stats = databricks_nats.stats()
        databricks_nats.shutdown(timeout=0)

    ratio = statistics.median(on) / statistics.median(off)
    print(f"log_metric median {statistics.median(off) * 1e6:.0f} us without, {statistics.median(on) * 1e6:.0f} us with "
          f"(ratio {ratio:.2f}, information)")  # fmt: skip
    assert max(on) < CONNECT_TIMEOUT, f"a call took {max(on):.2f} s: it waited on the network"
    expected = REPS * (CALLS + 2)  # per run: started, one metrics event per call, finished
    assert stats["connection"] != "connected"
    assert stats["emitted"] == expected, stats
    assert stats["acked"] == 0
    assert stats["dropped_total"] == 0, stats["dropped"]
    assert stats["pending"] == expected
    assert stats["secured"] == expected, "events not yet on disk after 10 s"
    assert stats["spool_bytes"] > 0
