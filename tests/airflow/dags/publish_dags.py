"""DAGs of test_airflow_publish.py: NatsPublishOperator through the connections nats_test and nats_wrong.

The connections come from AIRFLOW_CONN_NATS_TEST / AIRFLOW_CONN_NATS_WRONG (Airflow's environment secrets
backend), set by the test: the same server, the right and a wrong password.
"""

from __future__ import annotations

from airflow.sdk import DAG

from databricks_nats.airflow import NatsPublishOperator

for conn_id in ("nats_test", "nats_wrong"):
    with DAG(f"publish_with_{conn_id}", schedule=None) as dag:
        NatsPublishOperator(
            task_id="announce",
            event_type="myteam.deploy.done",
            data={"model": "main.ml.churn", "run_id": "{{ run_id }}"},
            keys=["churn"],
            nats_conn_id=conn_id,
            flush_timeout=3,
            retries=0,
        )
    globals()[dag.dag_id] = dag
