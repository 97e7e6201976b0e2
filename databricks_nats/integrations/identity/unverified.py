"""What a JWT says of itself, NOT verified: the client reads its own token's expiry, the service routes a token
to its verifier and bounds a cache with it, ``doctor`` shows it. Verification is ``oidc.py``'s job."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

__all__ = ["jwt_claims", "jwt_expiry"]


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, NOT verified (the auth service verifies), or None when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` of a JWT (not verified), or None when it is not a JWT or has none."""
    exp = (jwt_claims(token) or {}).get("exp")
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
