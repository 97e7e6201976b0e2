"""The webhook receiver: changes made outside a hooked process, told by webhooks, published as our events.

* ``mlflow``: MLflow OSS webhooks (3.3+), signature and replay window verified, mapped onto ``mlflow.model.*``
  and ``mlflow.prompt.*`` with the ids the MLflow hook gives the same changes (stored once).
* ``jobs``: Databricks job notifications (a webhook notification destination, basic auth) onto
  ``databricks.job_run.*``.
* ``server``: ``WebhookReceiver``, the stdlib HTTP server; ``cli``: ``databricks-nats webhook-receiver``.

Standard library and the core only: no MLflow, no web framework.

    from databricks_nats.integrations.webhooks import ReceiverConfig, WebhookReceiver
    from databricks_nats.values import Secret

    config = ReceiverConfig(port=8787, mlflow_secrets=(Secret("s3cr3t"),))
    with WebhookReceiver(config, url="nats://nats:4222", workspace="1234", env="prod") as receiver:
        ...  # serving on a thread until the block ends
"""

from __future__ import annotations

from databricks_nats.integrations.webhooks.server import REFUSALS, ReceiverConfig, WebhookReceiver

__all__ = ["REFUSALS", "ReceiverConfig", "WebhookReceiver"]
