"""The Prefect end of tests/chain, run by ``python chain_flow.py <deployment name>`` in the Prefect venv.

``flow.serve`` registers the deployment ``databricks-nats-chain/<name>`` and runs its flow runs (each in a
process of its own, which re-imports this file: keep it free of test code). The flow writes the parameters
it was given to ``$CHAIN_FLOW_OUT`` so the test sees what reached it from the Airflow event.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from prefect import flow


@flow(name="databricks-nats-chain")
def after_airflow(dag_id: str, task_id: str, run_id: str) -> str:
    """Stands for the step that follows Airflow's: records which Airflow task run started it."""
    out = os.environ.get("CHAIN_FLOW_OUT")
    if out:
        Path(out).write_text(json.dumps({"dag_id": dag_id, "task_id": task_id, "run_id": run_id}))
    return f"{dag_id}.{task_id} {run_id}"


if __name__ == "__main__":
    after_airflow.serve(name=sys.argv[1], pause_on_shutdown=False, print_starting_message=False)
