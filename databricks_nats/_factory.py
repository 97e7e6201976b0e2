"""The factory: which publisher a client gets for its settings, and the ports it uses unless given others.

``build_transport`` makes the background publisher (``transport.publisher``), or a ``NoopPublisher`` when
``disabled`` is set; ``default_secrets`` and ``default_context`` are the Databricks implementations of the
ports (``integrations.databricks``), imported when first asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from databricks_nats.errors import ConfigurationError
from databricks_nats.model.events import Encoder, Event
from databricks_nats.ports import ContextProvider, FlushResult, SecretSource, TokenSource, Transport, plain_context
from databricks_nats.settings import Settings
from databricks_nats.transport.publisher import Publisher
from databricks_nats.transport.spool import open_spool

__all__ = ["NoopPublisher", "build_transport", "default_context", "default_identity", "default_secrets", "make_encoder"]

log = logging.getLogger("databricks_nats")


class NoopPublisher:
    """The publisher when ``disabled`` is set: accepts and discards everything."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._count = 0

    def emit(self, event: Event) -> None:
        self._count += 1

    def emit_many(self, events: Iterable[Event]) -> None:
        for _ in events:
            self._count += 1

    def flush(self, timeout: float = 10.0) -> FlushResult:
        return FlushResult(True, 0)

    def stats(self) -> dict[str, Any]:
        return {"disabled": True, "emitted": self._count, "dropped": {"disabled": self._count}, "pending": 0}

    def close(self, timeout: float = 5.0) -> FlushResult:
        return FlushResult(True, 0)


def make_encoder(settings: Settings, context: Mapping[str, Any]) -> Any:
    """The function the worker uses to turn an Event into (subject, payload), given ``max_bytes``."""
    return Encoder(namespace=settings.namespace, workspace=settings.workspace, env=settings.env, context=dict(context))


def default_secrets() -> SecretSource:
    """The secret source a client uses unless given one: Databricks secret scopes (databricks-sdk, when read)."""
    from databricks_nats.integrations.databricks import DatabricksSecrets

    return DatabricksSecrets()


def default_context() -> ContextProvider:
    """The context provider a client uses unless given one: the Databricks workspace, cluster, notebook, job."""
    from databricks_nats.integrations.databricks import DatabricksContextProvider

    return DatabricksContextProvider()


def default_identity(settings: Settings) -> TokenSource | None:
    """The identity token source these settings name (``oidc_token``, ``aws_iam``), or None."""
    if not (settings.oidc_token or settings.aws_iam):
        return None  # without importing the identity package
    from databricks_nats.integrations.identity.sources import token_source

    return token_source(settings)


def build_transport(
    settings: Settings,
    context: Mapping[str, Any] | None = None,
    *,
    secrets: SecretSource | None = None,
    identity: TokenSource | None = None,
) -> Transport:
    """A publisher for these settings: no-op when disabled, else the background publisher.

    ``secrets`` reads secret scopes and ``{{secrets/…}}`` references (default: Databricks secret scopes);
    ``identity`` gets the identity token (default: the source the settings name, see ``default_identity``).
    """
    if settings.disabled:
        return NoopPublisher(settings)
    spool = open_spool(settings.spool_path, settings.spool_max_bytes)
    encoder = make_encoder(settings, context or plain_context(settings))
    if identity is None:
        try:
            identity = default_identity(settings)
        except ConfigurationError:
            spool.close()
            raise
    secrets = secrets if secrets is not None else default_secrets()
    publisher = Publisher(settings, spool, encoder, secrets=secrets, identity=identity)
    adopted = getattr(spool, "adopted", 0)
    if adopted:
        publisher.stats_.replayed = adopted
        log.info("databricks-nats: re-publishing %d event(s) left by a previous process", adopted)
    return publisher
