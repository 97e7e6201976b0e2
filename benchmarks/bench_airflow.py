"""Airflow latencies: a published event → its DAG run starting, and a task's success → its event in the stream.

Run in the Airflow environment (``.ci/airflow.sh <venv>`` builds it): ``<venv>/bin/python -m benchmarks.bench_airflow
[--quick] [--samples N]``. One real nats-server, and a real scheduler, triggerer, dag-processor and api-server
(SQLite, LocalExecutor, on a temporary AIRFLOW_HOME) with one DAG watching ``mlflow.model.alias_set`` through
``NatsEventTrigger``, the listener switched on. Each sample publishes one alias move and waits until its run has
finished (so runs never merge), then reads:

* publish → run start: the DAG run's ``start_date`` minus the event's ``time`` (both this host's clock);
* task success → stream: the JetStream store time of the ``airflow.task.success`` event minus the task
  instance's ``end_date`` (set by the task process just before the listener runs).

Startup (db migrate, the components, the first parse) is not measured.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import percentile, print_table, write_results

DAG = """
from airflow.sdk import DAG, Asset, AssetWatcher, task
from databricks_nats.airflow import NatsEventTrigger

moved = Asset(name="bench_alias", watchers=[AssetWatcher(name="bench_alias_watch", trigger=NatsEventTrigger(
    event_type="mlflow.model.alias_set", match={"name": "main.ml.bench", "alias": "champion"}, dag_id="bench"))])

with DAG("bench", schedule=[moved], catchup=False):
    @task
    def work():
        pass
    work()
"""
COMPONENTS = (
    ["dag-processor"],
    ["scheduler"],
    ["triggerer"],
    ["api-server", "--apps", "execution", "--workers", "1", "--host", "127.0.0.1", "--port"],
)


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _when(text: Any) -> float:
    stamp = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=_dt.timezone.utc)).timestamp()


def _row(db: Path, sql: str, *args: Any) -> Any:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchone()


def _until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise TimeoutError(what)


def _consumer_exists(url: str, durable: str) -> bool:
    import asyncio

    import nats

    import databricks_nats

    async def check() -> bool:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().consumer_info(databricks_nats.get_settings().stream_name, durable)
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    time.sleep(0.2)
    return asyncio.run(check())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--samples", type=int, default=0)
    args = parser.parse_args()
    samples = args.samples or (8 if args.quick else 30)

    from cryptography.fernet import Fernet

    import databricks_nats
    from databricks_nats.testing import NatsServer

    home = Path(tempfile.mkdtemp(prefix="bench-airflow-"))
    (home / "dags").mkdir()
    (home / "dags" / "bench_dag.py").write_text(DAG)
    port = _port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__PORT": port,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DATABRICKS_NATS__LISTENER": "True",
        "DATABRICKS_NATS_WORKSPACE": "bench",
        "DATABRICKS_NATS_ENV": "airflow",
        "DATABRICKS_NATS_SPOOL_DIR": str(home / "spool"),
    }
    db = home / "airflow.db"
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    procs = []
    with NatsServer() as srv:
        env["DATABRICKS_NATS_URL"] = srv.url
        databricks_nats.configure(url=srv.url, workspace="bench", env="airflow", spool_dir=str(home / "pub"))
        databricks_nats.ensure_stream()
        try:
            for argv in COMPONENTS:
                log = open(home / f"{argv[0]}.log", "wb")  # noqa: SIM115 - the child's
                extra = [port] if argv[0] == "api-server" else []
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "airflow", *argv, *extra],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                log.close()
            rows = _measure(db, samples, srv.url)
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    start = [r[0] for r in rows]
    stream = [r[1] for r in rows]
    table = [
        ("publish → DAG run start", len(start), percentile(start, 50), percentile(start, 99), max(start)),
        ("task success → event in stream", len(stream), percentile(stream, 50), percentile(stream, 99), max(stream)),
    ]
    print_table(["latency (ms)", "n", "p50", "p99", "max"], table, title="Airflow (listener on, LocalExecutor)")
    out = {"samples": samples, "publish_to_run_start_ms": start, "task_success_to_stream_ms": stream}
    print(f"results: {write_results('bench_airflow' + ('_quick' if args.quick else ''), out)}")


def _measure(db: Path, samples: int, url: str) -> list[tuple[float, float]]:
    import databricks_nats

    sub = databricks_nats.subscribe("airflow.task.success", match={"dag_id": "bench"})
    rows: list[tuple[float, float]] = []
    try:
        from databricks_nats.integrations.airflow import NatsEventTrigger

        durable = NatsEventTrigger(
            event_type="mlflow.model.alias_set",
            match={"name": "main.ml.bench", "alias": "champion"},
            url=url,
            workspace="bench",
            env="airflow",
        ).durable
        assert durable is not None
        _until("the triggerer did not create the durable consumer", lambda: _consumer_exists(url, durable), 240)
        for i in range(samples):
            event = databricks_nats.emit(
                "mlflow.model.alias_set", {"name": "main.ml.bench", "alias": "champion", "version": str(i)}
            )
            assert event is not None
            databricks_nats.flush(10)

            def started(n: int = i + 1) -> Any:
                row = _row(db, "SELECT start_date, run_id FROM dag_run ORDER BY id DESC LIMIT 1")
                count = _row(db, "SELECT count(*) FROM dag_run")[0]
                return row if count == n and row[0] else None

            began, run_id = _until("no DAG run", started, 120)
            got = sub.next(120)
            while got.data.get("run_id") != run_id:
                got = sub.next(120)
            stored = got._msg.metadata.timestamp.timestamp()
            (ended,) = _row(db, "SELECT end_date FROM task_instance WHERE run_id = ? AND task_id = 'work'", run_id)
            _until(
                "run not finished",
                lambda r=run_id: _row(db, "SELECT state FROM dag_run WHERE run_id = ?", r)[0] in ("success", "failed"),
                120,
            )
            rows.append(((_when(began) - event.time_ns / 1e9) * 1000, (stored - _when(ended)) * 1000))
            print(f"sample {i + 1}/{samples}: start {rows[-1][0]:.0f} ms, stream {rows[-1][1]:.0f} ms", flush=True)
    finally:
        sub.close()
    return rows


if __name__ == "__main__":
    main()
