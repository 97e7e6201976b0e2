"""Metric events under load: the coalescing bound, the ``every`` and ``off`` modes, and many threads at once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric

BATCH = 1000


def _log_points(client: MlflowClient, run_id: str, calls: int) -> None:
    now = int(time.time() * 1000)
    for call in range(calls):
        client.log_batch(
            run_id,
            metrics=[Metric(f"m{i % 4}", float(call * BATCH + i), now, call * BATCH + i) for i in range(BATCH)],
        )


def _points(events, run_id: str) -> int:
    return sum(e.data["points"] for e in events.of_type("mlflow.run.metrics") if e.data["run_id"] == run_id)


def test_coalesced_metrics_are_bounded_by_interval_and_count_every_point(tracking, record):
    """100k points in 100 ``log_batch`` calls give at most elapsed/interval + 3 events whose points sum to 100k."""
    interval = 1.0
    events = record(metrics_mode="coalesce", metrics_interval=interval)
    client = MlflowClient()
    run_id = client.create_run(tracking.experiment_id).info.run_id

    began = time.monotonic()
    _log_points(client, run_id, calls=100)
    client.set_terminated(run_id)
    elapsed = time.monotonic() - began

    # every point is accounted for when set_terminated returns, and the run's end is its last event
    assert _points(events, run_id) == 100_000
    assert events.types()[-1] == "mlflow.run.finished"
    metric_events = events.of_type("mlflow.run.metrics")
    assert 1 <= len(metric_events) <= elapsed / interval + 3, (len(metric_events), elapsed)
    assert sum(e.data["final"] for e in metric_events) <= 1  # none if a periodic event took the last points
    assert set(metric_events[0].data["metrics"]) <= {"m0", "m1", "m2", "m3"}
    finished = events.of_type("mlflow.run.finished")[0].data
    assert finished["metrics"] == {"m0": 99_996.0, "m1": 99_997.0, "m2": 99_998.0, "m3": 99_999.0}
    assert len(client.get_metric_history(run_id, "m0")) == 25_000  # MLflow stored every point


def test_mode_every_publishes_one_event_per_logging_call(tracking, record):
    """In ``every`` mode each ``log_batch`` call is exactly one run.metrics event carrying that call's points."""
    events = record(metrics_mode="every")
    client = MlflowClient()
    run_id = client.create_run(tracking.experiment_id).info.run_id
    _log_points(client, run_id, calls=20)
    client.set_terminated(run_id)

    metric_events = events.of_type("mlflow.run.metrics")
    assert [e.data["points"] for e in metric_events] == [BATCH] * 20
    assert [e.data["metrics"]["m3"]["step"] for e in metric_events] == [c * BATCH + 999 for c in range(20)]
    assert events.types()[-1] == "mlflow.run.finished"


def test_mode_off_publishes_no_metric_events_but_still_the_run_lifecycle(tracking, record):
    """In ``off`` mode metrics produce no events, while run.started and run.finished still do."""
    events = record(metrics_mode="off")
    client = MlflowClient()
    run_id = client.create_run(tracking.experiment_id).info.run_id
    _log_points(client, run_id, calls=5)
    client.log_metric(run_id, "single", 1.0)
    client.set_terminated(run_id)

    assert events.types() == ["mlflow.run.started", "mlflow.run.finished"]
    assert len(client.get_metric_history(run_id, "m0")) == 5 * BATCH // 4


def test_eight_threads_logging_to_their_own_runs_are_all_accounted_for(tracking, record):
    """Eight threads training at once: each run gets one started and one finished and all its points are counted."""
    events = record(metrics_mode="coalesce", metrics_interval=0.2)
    steps, keys = 40, 10
    runs: dict[int, str] = {}
    errors: list[BaseException] = []
    go = threading.Barrier(8)

    def train(worker: int) -> None:
        try:
            go.wait()
            with mlflow.start_run(run_name=f"worker-{worker}") as run:
                runs[worker] = run.info.run_id
                for step in range(steps):
                    mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
                mlflow.log_metrics({f"k{j}": float(worker) for j in range(keys)}, step=steps)
                mlflow.log_param("worker", worker)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=train, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    assert len(set(runs.values())) == 8
    per_run = steps + keys
    assert all(_points(events, r) == per_run for r in runs.values()), {r: _points(events, r) for r in runs.values()}
    lifecycle = Counter((e.type, e.data["run_id"]) for e in events if e.type.endswith(("started", "finished")))
    for run_id in runs.values():
        assert lifecycle[("mlflow.run.started", run_id)] == 1
        assert lifecycle[("mlflow.run.finished", run_id)] == 1
    for worker, run_id in runs.items():
        mine = [e for e in events if e.data["run_id"] == run_id]
        assert mine[0].type == "mlflow.run.started"
        assert mine[-1].type == "mlflow.run.finished"  # nothing of a run is published after its end
        assert all(e.data["run_name"] == f"worker-{worker}" for e in mine if "run_name" in e.data)
        params = [e.data["params"] for e in mine if e.type == "mlflow.run.params"]
        assert params == [{"worker": str(worker)}]
        finished = next(e.data for e in mine if e.type == "mlflow.run.finished")
        assert finished["metrics"] == {"loss": 1.0 / steps, **{f"k{j}": float(worker) for j in range(keys)}}


def test_latest_metrics_follow_mlflows_step_then_timestamp_then_value_order(tracking, record):
    """run.finished reports MLflow's latest value per metric, for a backfilled lower step and for a tied step."""
    events = record()
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 0.1, step=10)
        mlflow.log_metric("loss", 0.9, step=5)  # a backfilled earlier step
        mlflow.log_metrics({"acc": 0.5}, step=3)
        mlflow.log_metrics({"acc": 0.7}, step=3)  # same step: MLflow keeps the larger timestamp, then value
    assert mlflow.get_run(run.info.run_id).data.metrics == {"loss": 0.1, "acc": 0.7}
    assert events.of_type("mlflow.run.finished")[0].data["metrics"] == {"loss": 0.1, "acc": 0.7}
