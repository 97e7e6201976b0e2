"""The auth-callout service, to embed (extra ``[auth-service]``): OIDC and AWS IAM identities become NATS users.

::

    from databricks_nats.auth_service import AuthService, ServiceConfig

    service = AuthService(ServiceConfig.load("/etc/databricks-nats/auth-service.toml"))
    with service.running():      # or: await service.start() ... await service.stop() in your own loop
        ...
    service.stats()              # granted, denied by reason, decision latency

``databricks-nats auth-service --config FILE`` runs the same until SIGTERM (``serve``). See README "Identity".
"""

from databricks_nats.integrations.identity.config import ServiceConfig
from databricks_nats.integrations.identity.identity import Identity, Refused
from databricks_nats.integrations.identity.oidc import OidcIssuer
from databricks_nats.integrations.identity.policy import Decision, Permissions, Policy
from databricks_nats.integrations.identity.service import AuthService, serve

__all__ = [
    "AuthService",
    "Decision",
    "Identity",
    "OidcIssuer",
    "Permissions",
    "Policy",
    "Refused",
    "ServiceConfig",
    "serve",
]
