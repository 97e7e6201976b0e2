"""Real failures: the server stopped and restarted mid-stream, and the publishing process SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from databricks_nats import _api
from databricks_nats.testing import read_stream
from tests.faults.conftest import training_loop

pytestmark = pytest.mark.slow


def test_server_down_for_seconds_mid_stream_loses_and_duplicates_nothing(fresh_server, make_settings):
    """NATS stopped for 3 s while events keep coming: after it returns every event is stored exactly once."""
    settings = make_settings(fresh_server, ack_timeout=1.0)
    pub = _api.build_transport(settings)
    with training_loop(pub, "r") as ids:
        deadline = time.monotonic() + 20
        while pub.stats()["connection"] != "connected" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        fresh_server.stop()
        time.sleep(3.0)
        down_stats = pub.stats()
        fresh_server.start()
        time.sleep(0.5)
    assert pub.flush(60).ok, pub.stats()
    final = pub.stats()
    pub.close()
    stored = [m["envelope"]["id"] for m in read_stream(fresh_server.url, settings.stream_name)]
    assert down_stats["connection"] == "disconnected"
    assert len(stored) == len(set(stored)), "duplicates in the stream"
    assert sorted(stored) == sorted(ids)
    assert final["connects"] == 1
    assert final["dropped_total"] == 0


_CHILD = r"""
import sys, time
import databricks_nats as dn
dn.configure()
ids = open(sys.argv[1], "w", buffering=1)
i = 0
while True:
    data = {"experiment_id": "1", "run_id": "r", "metrics": {"step": i}, "points": 1, "final": False}
    ev = dn.emit("mlflow.run.metrics", data)
    ids.write(ev.id + "\n")
    i += 1
    if i % 100 == 0:
        s = dn.stats()
        print(s["secured"], s["acked"], flush=True)
        time.sleep(0.005)
"""

_RESUME = r"""
import json
import databricks_nats as dn
dn.configure()
ok = dn.flush(60).ok
print(json.dumps({"ok": ok, **{k: v for k, v in dn.stats().items() if k in ("replayed", "acked", "duplicates")}}))
"""


def test_sigkilled_publisher_is_replayed_from_its_spool_without_loss_or_duplicates(
    fresh_server, make_settings, tmp_path
):
    """A publishing process SIGKILLed mid-emission: a new process re-publishes every unacked event, none twice."""
    settings = make_settings(fresh_server)
    env = {
        **os.environ,
        "DATABRICKS_NATS_URL": fresh_server.url,
        "DATABRICKS_NATS_SPOOL_DIR": settings.spool_dir,
        "DATABRICKS_NATS_WORKSPACE": settings.workspace,
        "DATABRICKS_NATS_ENV": settings.env,
    }
    ids_file = tmp_path / "ids.txt"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(ids_file)], env=env, stdout=subprocess.PIPE, text=True)
    secured = 0
    assert child.stdout is not None
    assert fresh_server.proc is not None
    paused = False
    for line in child.stdout:
        secured, acked = map(int, line.split())  # secured: the first N events are acked or on disk
        if acked >= 1000 and not paused:  # some events stored; then the server stops answering (SIGSTOP),
            fresh_server.proc.send_signal(signal.SIGSTOP)  # so what follows stays unacked, in flight or spooled
            paused = True
        if paused and secured >= acked + 200:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    fresh_server.proc.send_signal(signal.SIGCONT)
    emitted = [x for x in ids_file.read_text().splitlines() if len(x) == 36]
    resumed = subprocess.run([sys.executable, "-c", _RESUME], env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    report = resumed.stdout.strip().splitlines()[-1]
    assert '"ok": true' in report, report
    stored = [m["envelope"]["id"] for m in read_stream(fresh_server.url, settings.stream_name)]
    assert len(stored) == len(set(stored)), "duplicates in the stream"
    assert set(stored) <= set(emitted)
    assert set(emitted[:secured]) <= set(stored), "an event that was acked or on disk was lost"
    assert '"replayed": 0' not in report, "the new process found nothing to replay"
