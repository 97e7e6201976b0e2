"""The Airflow end of tests/chain: ``score_with_champion`` runs when main.ml.chain gets the champion alias.

Its trigger is tied to the DAG (``dag_id``), so the listener's ``airflow.task.success`` of ``score`` carries
the alias event's causation one hop on, via ``airflow:dag/score_with_champion``. The trigger takes no
connection settings: the triggerer reads DATABRICKS_NATS_* from its environment.
"""

from __future__ import annotations

from airflow.sdk import DAG, Asset, AssetWatcher, task

from databricks_nats.airflow import NatsEventTrigger

champion = Asset(
    name="chain_champion",
    watchers=[
        AssetWatcher(
            name="chain_champion_alias",
            trigger=NatsEventTrigger(
                event_type="mlflow.model.alias_set",
                match={"name": "main.ml.chain", "alias": "champion"},
                dag_id="score_with_champion",
            ),
        )
    ],
)

with DAG("score_with_champion", schedule=[champion], catchup=False):

    @task
    def score() -> None:
        pass

    score()
