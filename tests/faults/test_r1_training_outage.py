"""R1: NATS SIGKILLed for several seconds and restarted while an autologged sklearn training loop runs.

Real processes only: a real nats-server (JetStream, file store) killed with SIGKILL and restarted on the same
port and store, real MLflow (sqlite tracking store, local artifacts) with ``mlflow.sklearn`` autologging, and
the hook installed by ``databricks_nats.autolog``. The ids the hook emitted are recorded by a thin wrapper
around the real publisher and compared with the ids stored in the stream.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from typing import Any

import pytest

import databricks_nats
from databricks_nats import _api
from databricks_nats.testing import NatsServer, read_stream

mlflow = pytest.importorskip("mlflow")
sklearn_linear = pytest.importorskip("sklearn.linear_model")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

OUTAGE_S = 4.0


class Recorder:
    """The real publisher, plus the id of every event handed to it (in emit order)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.settings = inner.settings
        self.ids: list[str] = []
        self._lock = threading.Lock()

    def emit(self, event: Any) -> None:
        with self._lock:
            self.ids.append(event.id)
        self.inner.emit(event)

    def flush(self, timeout: float = 10.0) -> Any:
        return self.inner.flush(timeout)

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()  # type: ignore[no-any-return]

    def close(self, timeout: float = 5.0) -> Any:
        return self.inner.close(timeout)


def test_nats_killed_and_restarted_during_autologged_training_delivers_every_event_exactly_once(
    fresh_server: NatsServer, mlflow_sqlite: str, tmp_path: Any, namespace: dict[str, str]
) -> None:
    """NATS SIGKILLed for 4 s mid-training and restarted: every event the hook emitted is in the stream once."""
    warnings.filterwarnings("ignore")
    settings = databricks_nats.configure(
        url=fresh_server.url,
        spool_dir=str(tmp_path / "spool"),
        metrics_mode="every",  # one event per log_metric: the most events an outage can hit
        ack_timeout=1.0,
        **namespace,
    )
    recorder = Recorder(_api._current())
    _api.set_transport(recorder)
    # Connected first: autolog() while the worker thread still imports nats deadlocks (see the test below).
    deadline = time.monotonic() + 20
    while recorder.stats()["connection"] != "connected" and time.monotonic() < deadline:
        time.sleep(0.02)
    databricks_nats.autolog(log_models=False, silent=True, exclusive=False)

    X, y = sklearn_datasets.make_classification(n_samples=300, n_features=8, random_state=0)
    outage: dict[str, Any] = {}
    chaos_done = threading.Event()

    def chaos() -> None:
        try:
            deadline = time.monotonic() + 60
            while recorder.stats()["acked"] < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            outage["acked_before"] = recorder.stats()["acked"]
            fresh_server.kill()
            outage["emitted_at_kill"] = len(recorder.ids)
            time.sleep(OUTAGE_S)
            outage["down"] = recorder.stats()
            outage["emitted_at_restart"] = len(recorder.ids)
            fresh_server.start()
        finally:
            chaos_done.set()

    chaos_thread = threading.Thread(target=chaos, daemon=True)
    chaos_thread.start()
    runs: list[str] = []
    started = time.monotonic()
    after_restart = 0
    while after_restart < 3 and time.monotonic() - started < 120:
        with mlflow.start_run() as run:
            model = sklearn_linear.SGDClassifier(max_iter=20, tol=None, random_state=len(runs))
            model.fit(X, y)  # autolog: params, training metrics, tags, dataset input
            for step in range(15):
                mlflow.log_metric("val_loss", 1.0 / (step + 1), step=step)
            mlflow.set_tag("epoch_block", str(len(runs)))
        runs.append(run.info.run_id)
        if chaos_done.is_set():
            after_restart += 1
    chaos_thread.join(30)
    assert chaos_done.is_set(), "the outage thread did not finish"
    assert "down" in outage, "the outage never happened"

    result = databricks_nats.flush(60)
    final = databricks_nats.stats()
    assert result.ok, final
    stored = [m["envelope"] for m in read_stream(fresh_server.url, settings.stream_name)]
    stored_ids = [e["id"] for e in stored]

    emitted_during_outage = outage["emitted_at_restart"] - outage["emitted_at_kill"]
    assert outage["down"]["connection"] != "connected"
    assert emitted_during_outage > 0, "no event was emitted while NATS was down"
    assert outage["down"]["acked"] < len(recorder.ids)
    duplicates = [i for i, n in Counter(stored_ids).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} event(s) stored more than once"
    missing = set(recorder.ids) - set(stored_ids)
    assert not missing, f"{len(missing)} of {len(recorder.ids)} event(s) never arrived"
    assert set(stored_ids) == set(recorder.ids)
    assert len(stored_ids) == len(recorder.ids) == final["emitted"]
    assert final["dropped_total"] == 0
    types = Counter(e["type"].removeprefix("databricks.mlflow.") for e in stored)
    assert types["run.started"] == types["run.finished"] == len(runs)
    assert types["run.params"] >= len(runs)  # autologged estimator parameters
    assert types["run.metrics"] >= 15 * len(runs)


_CONFIGURE_THEN_AUTOLOG = r"""
import sys, time
import mlflow, sklearn.linear_model  # a training script has its libraries imported before it configures
import databricks_nats as dn
mlflow.set_tracking_uri(sys.argv[2])
dn.configure(url=sys.argv[1], spool_dir=sys.argv[3], workspace="r1", env="test")
dn.autolog(log_models=False, silent=True)
print("autolog returned", flush=True)
"""


def test_autolog_right_after_configure_returns(fresh_server: NatsServer, tmp_path: Any) -> None:
    """``configure()`` then ``autolog()`` (the README's order) returns, not deadlocking on the import lock."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_NATS_"))}
    argv = [fresh_server.url, f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "spool")]
    proc = subprocess.Popen(
        [sys.executable, "-c", _CONFIGURE_THEN_AUTOLOG, *argv],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        pytest.fail("configure() followed by autolog() did not return within 60 s (import-lock deadlock)")
    assert proc.returncode == 0, err[-3000:]
    assert "autolog returned" in out
