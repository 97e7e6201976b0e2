"""What a verifier proves about a client, and how it says no.

``Identity`` is the verified result (never the token); ``Refused`` carries a short reason that is safe to log,
audit and send back to the server: it never contains token material.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from databricks_nats.errors import DatabricksNatsError

__all__ = ["Identity", "Refused"]


class Refused(DatabricksNatsError):
    """A token was not accepted. ``reason`` is short and free of token material (``"token expired"``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """A verified identity.

    - ``kind``: ``"oidc"``, ``"databricks"`` (a token introspected at its workspace) or ``"aws_iam"``.
    - ``issuer``: the OIDC ``iss``; ``"sts.amazonaws.com"``-style STS host for AWS.
    - ``subject``: the OIDC ``sub`` (a Databricks service principal's application id, an Okta/Entra object id);
      for AWS the caller ARN as STS returned it (``arn:aws:sts::123456789012:assumed-role/Role/session``).
    - ``expires_at``: the token's ``exp`` (epoch seconds) or None when the proof carries no expiry (AWS).
    - ``claims``: what policy rules match on. OIDC: every verified claim of the token. AWS: ``account``, ``arn``
      (the caller ARN), ``role_arn`` (``arn:aws:iam::<account>:role/<name>`` for an assumed role, else the ARN),
      ``user_id``.
    """

    kind: str
    issuer: str
    subject: str
    expires_at: float | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A printable, stable name: ``oidc:<issuer>#<subject>`` or ``aws_iam:<arn>``."""
        if self.kind == "aws_iam":
            return f"aws_iam:{self.subject}"
        return f"{self.kind}:{self.issuer}#{self.subject}"
