"""DAGs for test_airflow_sensor.py: announce a champion, wait for it with NatsEventSensor, use the XCom.

``wait_past_a_loop_*`` first announce a champion whose chain already went through that very DAG (an echo of
its own output): the sensor must refuse it (loop guard, ``system.loop.detected``) and take the next one.

The sensor is given no connection settings: it reads DATABRICKS_NATS_URL / _WORKSPACE / _ENV from the
environment, as it would on a real worker or triggerer. The downstream task writes what it received to
the file named by NATS_TEST_OUT.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

import databricks_nats
from databricks_nats import Causation
from databricks_nats.airflow import NatsEventSensor

for mode in ("deferred", "blocking"):
    with DAG(f"wait_for_champion_{mode}", schedule=None) as dag:

        @task
        def promote() -> str:
            databricks_nats.emit(
                "mlflow.model.alias_set", {"name": "main.ml.other", "alias": "champion", "version": "1"}
            )
            event = databricks_nats.emit(
                "mlflow.model.alias_set", {"name": "main.ml.churn", "alias": "champion", "version": "12"}
            )
            assert event is not None
            assert databricks_nats.flush(timeout=10).ok
            return event.id

        wait = NatsEventSensor(
            task_id="wait_for_champion",
            event_type="mlflow.model.alias_set",
            match={"name": "main.ml.churn", "alias": "champion"},
            timeout=120,
            deferrable=mode == "deferred",
        )

        @task
        def deploy(event: dict[str, Any], promoted: str) -> None:
            Path(os.environ["NATS_TEST_OUT"]).write_text(json.dumps({"event": event, "promoted": promoted}))

        promoted = promote()
        promoted >> wait
        deploy(wait.output, promoted)
    globals()[dag.dag_id] = dag

for mode in ("deferred", "blocking"):
    with DAG(f"wait_past_a_loop_{mode}", schedule=None) as dag:

        @task
        def promote_twice(**context: Any) -> str:
            looped = Causation("cause-x", "loop-root", 2, (f"airflow:dag/{context['dag'].dag_id}", "prefect:x"))
            data = {"name": "main.ml.churn", "alias": "champion"}
            databricks_nats.emit("mlflow.model.alias_set", {**data, "version": "13"}, causation=looped)
            event = databricks_nats.emit("mlflow.model.alias_set", {**data, "version": "14"})
            assert event is not None
            assert databricks_nats.flush(timeout=10).ok
            return event.id

        wait = NatsEventSensor(
            task_id="wait_for_champion",
            event_type="mlflow.model.alias_set",
            match={"name": "main.ml.churn", "alias": "champion"},
            timeout=120,
            deferrable=mode == "deferred",
        )

        @task
        def deploy(event: dict[str, Any], promoted: str) -> None:
            Path(os.environ["NATS_TEST_OUT"]).write_text(json.dumps({"event": event, "promoted": promoted}))

        promoted = promote_twice()
        promoted >> wait
        deploy(wait.output, promoted)
    globals()[dag.dag_id] = dag
