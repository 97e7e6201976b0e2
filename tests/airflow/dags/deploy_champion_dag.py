"""The asset-watched DAG of test_airflow_e2e.py: deploy when main.ml.churn gets the champion alias.

The trigger is given no connection settings: the triggerer reads DATABRICKS_NATS_URL / _WORKSPACE / _ENV
from its environment. The task writes the CloudEvents of its run to the file named by NATS_TEST_OUT.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, AssetWatcher, task

from databricks_nats.airflow import NatsEventTrigger, cloudevents

champion = Asset(
    name="churn_champion",
    watchers=[
        AssetWatcher(
            name="churn_champion_alias",
            trigger=NatsEventTrigger(
                event_type="mlflow.model.alias_set", match={"name": "main.ml.churn", "alias": "champion"}
            ),
        )
    ],
)

with DAG("deploy_churn_champion", schedule=[champion], catchup=False):

    @task
    def deploy(**context: Any) -> None:
        events = cloudevents(context["triggering_asset_events"])  # a burst may be merged into one run
        Path(os.environ["NATS_TEST_OUT"]).write_text(json.dumps(events))

    deploy()
