"""Two DAGs for test_airflow_sensor.py: announce a champion, wait for it with NatsEventSensor, use the XCom.

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
