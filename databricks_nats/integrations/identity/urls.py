"""The one rule for every URL the auth service calls (issuers, JWKS, workspaces, STS): https, or plain http to
a loopback host only (a test stub, a sidecar). Checked when the service is configured."""

from __future__ import annotations

import ipaddress
import urllib.parse

from databricks_nats.errors import ConfigurationError

__all__ = ["is_loopback", "require_https"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_https(setting: str, url: str) -> urllib.parse.SplitResult:
    """The URL's parts, or ConfigurationError when it is neither https nor http to a loopback host."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and (parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname))):
        return parts
    raise ConfigurationError(setting, "must be an https:// URL (http:// only for a loopback host)")
