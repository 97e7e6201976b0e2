"""R8: several processes share one spool directory: outages, SIGKILLs, fork pools (issue 13 items 4, 5, 9).

Real processes and a real nats-server. Four publishers emit into the same namespace (one spool directory);
the server is stopped, two of them are SIGKILLed during the outage (one ``write-behind``, one
``immediate``), the server returns: the two survivors adopt the dead spools while they run (no new process
starts), and every event is in the stream once. Lost is bounded by the documented window: the
write-behind publisher may lose what it emitted in its last 50 ms (everything up to its last
``secured`` report is checked); the immediate one loses nothing.

The fork-pool test runs ``multiprocessing.get_context("fork").Pool(4)``, 250 events each: the workers end
with ``os._exit`` (no exit handler), so a forked child writes every event to its own spool before emit
returns, and the parent adopts what the workers did not get acknowledged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from databricks_nats.testing import read_stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

_PUBLISHER = r"""
import json, os, sys, time
from databricks_nats.transport import storage
storage._ADOPT_EVERY = 1.0  # the default is 30 s; the mechanism is the same
import databricks_nats as dn
ids_path, sync, stop_path = sys.argv[1], sys.argv[2], sys.argv[3]
dn.configure(spool_sync=sync, ack_timeout=1.0)
ids = open(ids_path, "w", buffering=1)
i = 0
while not os.path.exists(stop_path):
    data = {"experiment_id": "1", "run_id": "r", "metrics": {"step": i}, "points": 1, "final": False}
    ev = dn.emit("mlflow.run.metrics", data)
    ids.write(ev.id + "\n")  # after emit: an id in the file was handed over
    i += 1
    if i % 50 == 0:
        s = dn.stats()
        print(json.dumps({k: s[k] for k in ("secured", "acked", "replayed", "connection")}), flush=True)
        time.sleep(0.01)
ok = dn.flush(60).ok
s = dn.stats()
print(json.dumps({"final": True, "ok": ok, **{k: s[k] for k in ("replayed", "acked", "dropped", "errors", "pending")}}),
      flush=True)
dn.shutdown()
"""


class Publisher:
    """One publishing process; its last stats line is kept up to date by a reader thread."""

    def __init__(self, n: int, sync: str, env: dict[str, str], tmp: Path) -> None:
        self.ids_path = tmp / f"ids-{n}.txt"
        self.stop_path = tmp / f"stop-{n}"
        self.stderr_path = tmp / f"stderr-{n}.txt"
        self.sync = sync
        self.last: dict[str, Any] = {}
        self.lines: list[dict[str, Any]] = []
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PUBLISHER, str(self.ids_path), sync, str(self.stop_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.last = json.loads(line)
            except ValueError:
                continue
            self.lines.append(self.last)

    def ids(self) -> list[str]:
        return [x for x in self.ids_path.read_text().splitlines() if len(x) == 36]

    def finish(self) -> dict[str, Any]:
        self.stop_path.touch()
        self.proc.wait(120)
        self._reader.join(10)
        self._stderr.close()
        return self.last

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_four_processes_one_spool_dir_outage_and_sigkills_lose_and_duplicate_nothing(
    fresh_server: Any, make_settings: Any, tmp_path: Path
) -> None:
    """R8: four publishers, one spool directory, NATS stopped, two SIGKILLed in the outage, survivors adopt.

    0 duplicates in the stream; 0 lost for the survivors and the immediate publisher; the write-behind
    publisher loses nothing it had reported secured; nothing raised or logged as a traceback; the dead
    spools are adopted by the running survivors.
    """
    settings = make_settings(fresh_server)
    env = {
        **os.environ,
        "DATABRICKS_NATS_URL": fresh_server.url,
        "DATABRICKS_NATS_SPOOL_DIR": settings.spool_dir,
        "DATABRICKS_NATS_WORKSPACE": settings.workspace,
        "DATABRICKS_NATS_ENV": settings.env,
        "DATABRICKS_NATS_DETECT_CONTEXT": "false",
    }
    pubs = [Publisher(n, sync, env, tmp_path) for n, sync in enumerate(["write-behind", "immediate"] * 2)]
    killed, survivors = pubs[:2], pubs[2:]
    try:
        _wait(lambda: all(p.last.get("acked", 0) >= 300 for p in pubs), 60, "every publisher acked 300")
        fresh_server.stop()
        _wait(lambda: all(p.last.get("connection") == "disconnected" for p in pubs), 30, "all disconnected")
        time.sleep(1.0)  # events pile up in the spools
        secured_at_kill = {}
        for p in killed:
            secured_at_kill[p.sync] = p.last["secured"]
            p.proc.send_signal(signal.SIGKILL)
            p.proc.wait(30)
        fresh_server.start()
        spool = Path(settings.spool_path)
        dead = {f"spool-{p.proc.pid}-" for p in killed}
        _wait(
            lambda: not [f for f in os.listdir(spool) if any(f.startswith(d) for d in dead)],
            60,
            "the running survivors to adopt the dead spools",
        )
        time.sleep(0.5)
        finals = [p.finish() for p in survivors]
    finally:
        for p in pubs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()
    stored = [m["envelope"]["id"] for m in read_stream(fresh_server.url, settings.stream_name)]
    emitted = {p.sync + str(n): p.ids() for n, p in enumerate(pubs)}
    figures = {}
    for n, p in enumerate(pubs):
        ids = emitted[p.sync + str(n)]
        lost = [i for i in ids if i not in set(stored)]
        figures[f"p{n} {p.sync}{' killed' if p in killed else ''}"] = {"emitted": len(ids), "lost": len(lost)}
    print("R8 figures:", json.dumps(figures), "duplicates:", len(stored) - len(set(stored)))
    assert len(stored) == len(set(stored)), "duplicates in the stream"
    everything = {i for ids in emitted.values() for i in ids}
    assert len(set(stored) - everything) <= len(killed)  # a killed one's last id: emitted, not yet written down
    stored_set = set(stored)
    for p in survivors:
        assert set(p.ids()) <= stored_set
    wb, imm = killed
    assert set(imm.ids()) <= stored_set, "immediate: an event handed to emit() was lost on SIGKILL"
    assert set(wb.ids()[: secured_at_kill["write-behind"]]) <= stored_set, "write-behind lost a secured event"
    for f in finals:
        assert f["final"], f
        assert f["ok"], f
        assert f["dropped"] == {}, f
    assert sum(f["replayed"] for f in finals) > 0
    for p in pubs:
        text = p.stderr() if p in killed else p.stderr_path.read_text()
        for bad in ("Traceback", "FileNotFoundError", "BlockingIOError", "could not adopt"):
            assert bad not in text, text[-3000:]


_POOL = r"""
import json, multiprocessing, os, sys, time
from databricks_nats.transport import storage
storage._ADOPT_EVERY = 0.5  # the default is 30 s; the mechanism is the same
import databricks_nats as dn

def work(k):
    ids = []
    for i in range(250):
        data = {"experiment_id": "1", "run_id": f"w{k}", "metrics": {"step": i}, "points": 1, "final": False}
        ids.append(dn.emit("mlflow.run.metrics", data).id)
    return ids

if __name__ == "__main__":
    dn.configure()
    first = {"experiment_id": "1", "run_id": "parent", "metrics": {}, "points": 0, "final": False}
    dn.emit("mlflow.run.metrics", first)  # the parent publishes (and holds its spool) before forking
    with multiprocessing.get_context("fork").Pool(4) as pool:
        ids = [i for chunk in pool.map(work, range(4)) for i in chunk]
        pool.close()
        pool.join()
    spool = dn.stats()["spool_path"]
    own = os.path.basename(spool)[:-3]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        others = [f for f in os.listdir(os.path.dirname(spool)) if f.startswith("spool-") and not f.startswith(own)]
        if not others:
            break
        time.sleep(0.1)
    ok = dn.flush(60).ok
    s = dn.stats()
    print(json.dumps({"ids": ids, "ok": ok, "others": others, "replayed": s["replayed"], "dropped": s["dropped"]}))
"""


def test_fork_pool_workers_events_are_delivered_once_even_though_workers_end_with_os_exit(
    nats_server: Any, make_settings: Any, tmp_path: Path
) -> None:
    """R8 / issue 13 item 9: a fork ``Pool(4)``, 250 events per worker: all 1,000 arrive, none twice."""
    settings = make_settings(nats_server)
    env = {
        **os.environ,
        "DATABRICKS_NATS_URL": nats_server.url,
        "DATABRICKS_NATS_SPOOL_DIR": settings.spool_dir,
        "DATABRICKS_NATS_WORKSPACE": settings.workspace,
        "DATABRICKS_NATS_ENV": settings.env,
        "DATABRICKS_NATS_DETECT_CONTEXT": "false",
    }
    run = subprocess.run([sys.executable, "-c", _POOL], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    stored = [m["envelope"]["id"] for m in read_stream(nats_server.url, settings.stream_name)]
    assert len(stored) == len(set(stored)), "duplicates in the stream"
    assert len(report["ids"]) == 1000
    missing = set(report["ids"]) - set(stored)
    assert not missing, (
        f"{len(missing)} of 1000 pool events lost; report: { {k: report[k] for k in ('others', 'replayed', 'ok')} }"
    )
    assert report["ok"], report
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
