"""``MessageQueueTrigger(scheme="nats", ...)`` (apache-airflow-providers-common-messaging) → ``NatsEventTrigger``.

Two spellings resolve here:

* ``MessageQueueTrigger(scheme="nats", event_type="mlflow.model.alias_set", match={...}, url=..., ...)``:
  the keyword arguments are ``NatsEventTrigger``'s.
* ``MessageQueueTrigger(queue="nats://host:4222/mlflow.model.alias_set?workspace=123&env=prod")``
  (deprecated upstream, still supported): the URI's servers are ``url``, its path the ``event_type``, and its
  query the ``workspace``, ``env``, ``subject_prefix``, ``stream``, ``durable`` and ``start``. Keyword arguments
  win over the URI. Credentials in the URI are refused: the trigger table would store them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from airflow.providers.common.messaging.providers.base_provider import BaseMessageQueueProvider

from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.airflow.triggers import NatsEventTrigger

__all__ = ["NatsMessageQueueProvider", "parse_queue_uri"]

_QUERY = ("workspace", "env", "subject_prefix", "stream", "durable", "start")


def parse_queue_uri(queue: str) -> dict[str, Any]:
    """``nats://host:4222[,host2:4222]/<event type>?workspace=..&env=..`` → ``NatsEventTrigger`` arguments."""
    parts = urlsplit(queue)
    if parts.scheme != "nats":
        raise ConfigurationError("queue", f"not a nats:// queue URI: {queue!r}")
    if "@" in parts.netloc:
        raise ConfigurationError(
            "queue",
            "credentials do not go into the queue URI (Airflow stores it): set DATABRICKS_NATS_TOKEN / "
            "DATABRICKS_NATS_CREDS / DATABRICKS_NATS_USER + DATABRICKS_NATS_PASSWORD in the triggerer's environment",
        )
    out: dict[str, Any] = {}
    if parts.netloc:
        out["url"] = ",".join(f"nats://{host}" for host in parts.netloc.split(","))
    path = parts.path.strip("/")
    if path:
        out["event_type"] = path
    for name, value in parse_qsl(parts.query, keep_blank_values=False, strict_parsing=False):
        if name not in _QUERY:
            known = ", ".join(_QUERY)
            raise ConfigurationError("queue", f"unknown query parameter {name!r} in {queue!r}; known: {known}")
        out[name] = value  # start: NatsEventTrigger parses it (StartPosition)
    return out


class NatsMessageQueueProvider(BaseMessageQueueProvider):
    """The ``nats`` scheme and ``nats://`` queue URIs of ``MessageQueueTrigger``."""

    scheme = "nats"

    def queue_matches(self, queue: str) -> bool:
        return queue.startswith("nats://")

    def trigger_class(self) -> type[NatsEventTrigger]:
        return NatsEventTrigger

    def trigger_kwargs(self, queue: str, **kwargs: Any) -> dict[str, Any]:
        # MessageQueueTrigger passes these *and* its own kwargs to the trigger: leave out what kwargs has.
        return {k: v for k, v in parse_queue_uri(queue).items() if k not in kwargs}
