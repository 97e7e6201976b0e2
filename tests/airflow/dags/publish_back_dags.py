"""DAGs of test_airflow_e2e.py's publish-back test: run on NATS events, publish back, and a deliberate loop.

* ``deploy_and_announce`` runs when main.ml.churn gets the champion alias; its ``announce`` task publishes
  ``myteam.deploy.done`` with ``NatsPublishOperator`` through the connection ``nats_default``.
* ``echo`` runs when main.ml.echo gets the champion alias **and** when its own task succeeds (it watches
  ``airflow.task.success`` of itself): a loop, cut by the trigger's loop guard (``dag_id="echo"``).

The triggers are given no connection settings: the triggerer reads DATABRICKS_NATS_* from its environment.
"""

from __future__ import annotations

from airflow.sdk import DAG, Asset, AssetWatcher, task

from databricks_nats.airflow import NatsEventTrigger, NatsPublishOperator

champion = Asset(
    name="churn_champion_publish_back",
    watchers=[
        AssetWatcher(
            name="churn_champion_alias_publish_back",
            trigger=NatsEventTrigger(
                event_type="mlflow.model.alias_set",
                match={"name": "main.ml.churn", "alias": "champion"},
                dag_id="deploy_and_announce",
            ),
        )
    ],
)

with DAG("deploy_and_announce", schedule=[champion], catchup=False):

    @task(outlets=[Asset(name="churn_endpoint", uri="serving://churn")])
    def deploy() -> None:
        pass

    announce = NatsPublishOperator(
        task_id="announce",
        event_type="myteam.deploy.done",
        data={"model": "main.ml.churn", "run_id": "{{ run_id }}"},
        keys=["churn"],
    )
    deploy() >> announce

kick = Asset(
    name="echo_kick",
    watchers=[
        AssetWatcher(
            name="echo_kick_alias",
            trigger=NatsEventTrigger(
                event_type="mlflow.model.alias_set", match={"name": "main.ml.echo", "alias": "champion"}
            ),
        )
    ],
)
itself = Asset(
    name="echo_itself",
    watchers=[
        AssetWatcher(
            name="echo_task_success",
            trigger=NatsEventTrigger(event_type="airflow.task.success", match={"dag_id": "echo"}, dag_id="echo"),
        )
    ],
)

with DAG("echo", schedule=(kick | itself), catchup=False):

    @task
    def shout() -> None:
        pass

    shout()
