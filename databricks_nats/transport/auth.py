"""NATS connection options from settings: servers, credentials (token, user/password, NKey, .creds)."""

from __future__ import annotations

import os
from typing import Any

from nats.aio.client import RawCredentials

from databricks_nats.settings import Secret, Settings

__all__ = ["auth_options", "credentials_source"]


def _is_path(value: str) -> bool:
    return "\n" not in value and len(value) < 4096 and os.path.isfile(os.path.expanduser(value))


def auth_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` carrying the configured credentials (never logged)."""
    opts: dict[str, Any] = {}
    if settings.creds is not None:
        raw = settings.creds.reveal()
        opts["user_credentials"] = os.path.expanduser(raw) if _is_path(raw) else RawCredentials(raw)
    elif settings.nkey_seed is not None:
        raw = settings.nkey_seed.reveal()
        if _is_path(raw):
            opts["nkeys_seed"] = os.path.expanduser(raw)
        else:
            opts["nkeys_seed_str"] = raw
    if settings.token is not None:
        opts["token"] = settings.token.reveal()
    if settings.user:
        opts["user"] = settings.user
        if isinstance(settings.password, Secret):
            opts["password"] = settings.password.reveal()
    return opts


def credentials_source(settings: Settings) -> str:
    """A printable description of which credentials are in use (no values)."""
    kinds = [k for k in ("creds", "nkey_seed", "token", "password") if getattr(settings, k) is not None]
    if settings.user and "password" not in kinds:
        kinds.append("user")
    return ", ".join(kinds) or "none"
