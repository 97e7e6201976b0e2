"""The Databricks SDK, used lazily: one ``WorkspaceClient`` per process, the caller's identity and workspace
id (cached, bounded by a timeout) and secret-scope reads.

``databricks-sdk`` is an optional extra: nothing here imports it until a function needs it, and every
function degrades (returns ``None`` / raises ``ConfigurationError`` for secrets) when it is missing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Any

from databricks_nats.errors import ConfigurationError

__all__ = [
    "Identity",
    "bearer",
    "bearer_token",
    "identity",
    "read_secret",
    "sdk_available",
    "set_workspace_client",
    "workspace_client",
]

_lock = threading.Lock()
_client: Any = None
_identity: dict[str, Any] = {}  # "thread" and, once known, "value"


@dataclass(frozen=True)
class Identity:
    """Who this process is to Databricks: the numeric workspace id and the user (or service principal)."""

    workspace_id: str | None = None
    user: str | None = None
    workspace_url: str | None = None


def sdk_available() -> bool:
    """True when databricks-sdk is importable and something tells it which workspace to talk to."""
    if _client is not None:
        return True
    try:
        if importlib.util.find_spec("databricks.sdk") is None:
            return False
    except (ImportError, ValueError):
        return False
    env = os.environ
    return bool(
        env.get("DATABRICKS_HOST")
        or env.get("DATABRICKS_RUNTIME_VERSION")
        or env.get("DATABRICKS_CONFIG_PROFILE")
        or os.path.isfile(os.path.expanduser("~/.databrickscfg"))
    )


def set_workspace_client(client: Any) -> None:
    """Use this ``WorkspaceClient`` (or ``None`` to build one from the environment again); forgets the cache."""
    global _client
    with _lock:
        _client = client
        _identity.clear()


def workspace_client(timeout: float = 10.0) -> Any:
    """The process's ``WorkspaceClient``, built on first use with short HTTP and retry timeouts."""
    global _client
    with _lock:
        if _client is None:
            from databricks.sdk import WorkspaceClient
            from databricks.sdk.config import Config

            t = max(1, int(timeout))
            _client = WorkspaceClient(config=Config(http_timeout_seconds=t, retry_timeout_seconds=t))
        return _client


def read_secret(scope: str, key: str, timeout: float = 10.0) -> str | None:
    """The decoded value of ``scope/key`` (None when it does not exist); errors never carry the value."""
    try:
        from databricks.sdk.errors import NotFound
    except ImportError:
        raise ConfigurationError(
            "secret_scope", "reading a secret scope needs databricks-sdk: pip install 'databricks-nats[databricks]'"
        ) from None
    try:
        response = workspace_client(timeout).secrets.get_secret(scope=scope, key=key)
    except NotFound:
        return None
    except Exception as e:  # noqa: BLE001 - auth, permission, network: named, never with a value
        problem = f"cannot read key {key!r} of scope {scope!r}: {type(e).__name__}"
        raise ConfigurationError("secret_scope", problem) from None
    if response.value is None:
        return None
    try:
        return base64.b64decode(response.value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ConfigurationError("secret_scope", f"key {key!r} of scope {scope!r} is not base64 UTF-8") from None


def bearer(timeout: float = 10.0) -> tuple[str, str]:
    """The workspace URL and the bearer token the SDK authenticates with there (its own auth chain: OAuth M2M
    for a service principal, workload identity federation, U2M, a PAT, the runtime's native auth on a job
    cluster or serverless...), refreshed by the SDK before it expires. Errors carry no value."""
    try:
        config = workspace_client(timeout).config
        headers = config.authenticate()
        host = str(config.host or "")
    except ImportError:
        raise ConfigurationError(
            "oidc_token", "oidc_token = databricks needs databricks-sdk: pip install 'databricks-nats[databricks]'"
        ) from None
    except Exception as e:  # noqa: BLE001 - no auth configured, network, refused: named, never with a value
        raise ConfigurationError("oidc_token", f"the Databricks SDK gave no token: {type(e).__name__}") from None
    scheme, _, token = str(headers.get("Authorization", "")).partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ConfigurationError("oidc_token", "the Databricks SDK's auth is not a bearer token")
    if not host:
        raise ConfigurationError("oidc_token", "the Databricks SDK names no workspace host")
    return host.rstrip("/"), token


def bearer_token(timeout: float = 10.0) -> str:
    """The bearer token alone (see ``bearer``)."""
    return bearer(timeout)[1]


def _lookup(timeout: float) -> Identity:
    w = workspace_client(timeout)
    found: dict[str, Any] = {}
    # Best effort, each on its own: the context is descriptive, never required.
    with contextlib.suppress(Exception):
        found["workspace_id"] = str(w.get_workspace_id())
    with contextlib.suppress(Exception):
        me = w.current_user.me()
        found["user"] = me.user_name or me.display_name
    with contextlib.suppress(Exception):
        found["workspace_url"] = w.config.host
    return Identity(**found)


def identity(timeout: float) -> Identity | None:
    """Workspace id and user from the SDK: looked up once per process in a daemon thread.

    Waits at most ``timeout`` seconds (0: do not wait); a later call returns the result once it arrived.
    Returns None while unknown, when the SDK is not configured, or when the lookup failed.
    """
    if "value" in _identity:
        value: Identity | None = _identity["value"]
        return value
    if not sdk_available():
        return None
    with _lock:
        th = _identity.get("thread")
        if th is None:

            def run() -> None:
                try:
                    found: Identity | None = _lookup(timeout)
                except Exception:  # noqa: BLE001 - no SDK auth configured, import errors…
                    found = None
                _identity["value"] = found

            th = threading.Thread(target=run, name="databricks-nats-identity", daemon=True)
            _identity["thread"] = th
            th.start()
    if timeout > 0:
        th.join(timeout)
    result: Identity | None = _identity.get("value")
    return result
