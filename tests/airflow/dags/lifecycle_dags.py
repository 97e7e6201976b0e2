"""DAGs of test_airflow_e2e.py's lifecycle test: failure, retry and skip events, and a loop cut by the hop limit.

* ``fail_retry_skip`` runs when main.ml.flaky gets the champion alias: ``flaky`` fails, is retried once
  (``retries=1``, a one-second delay) and fails again; ``skipper`` skips itself. The run fails.
* ``ping`` and ``pong`` trigger each other (each watches the other's ``airflow.task.success``); ``ping`` is
  kicked off by main.ml.pingpong getting the champion alias. The triggers get no ``dag_id``, so the "chain went
  through my DAG" check cannot fire: only the hop limit (``settings={"hop_limit": 3}``) cuts the loop, after
  ping (hop 1), pong (hop 2), ping (hop 3).

The triggers are given no connection settings: the triggerer reads DATABRICKS_NATS_* from its environment.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset, AssetWatcher, task
from airflow.sdk.exceptions import AirflowSkipException

from databricks_nats.airflow import NatsEventTrigger

HOP_LIMIT = {"hop_limit": 3}


def _alias(name: str) -> Asset:
    trigger = NatsEventTrigger(event_type="mlflow.model.alias_set", match={"name": name, "alias": "champion"})
    return Asset(name=f"{name}_champion", watchers=[AssetWatcher(name=f"{name}_champion_alias", trigger=trigger)])


def _success_of(dag_id: str) -> Asset:
    trigger = NatsEventTrigger(event_type="airflow.task.success", match={"dag_id": dag_id}, settings=HOP_LIMIT)
    return Asset(name=f"{dag_id}_succeeded", watchers=[AssetWatcher(name=f"{dag_id}_task_success", trigger=trigger)])


with DAG("fail_retry_skip", schedule=[_alias("main.ml.flaky")], catchup=False):

    @task(retries=1, retry_delay=dt.timedelta(seconds=1))
    def flaky() -> None:
        raise RuntimeError("always fails")

    @task
    def skipper() -> None:
        raise AirflowSkipException("nothing to do")

    flaky()
    skipper()

with DAG("ping", schedule=(_alias("main.ml.pingpong") | _success_of("pong")), catchup=False):

    @task
    def hit() -> None:
        pass

    hit()

with DAG("pong", schedule=[_success_of("ping")], catchup=False):

    @task
    def back() -> None:
        pass

    back()
