"""Every decision of the auth service, as an event (``system.auth.granted`` / ``denied``) and a log line.

An audit record names the identity, the rule that matched, the permissions granted (or the reason for the
refusal) and the client (host, name, library); never the token. Records are rate-limited per key: a token
bucket of ``per_second`` with a burst of twice that. A grant's key is its identity; a refusal's is its reason,
the client host and the identity when one was verified (a token refused by the policy, not a bad token), so
twenty identities refused by one rule from one host are twenty records, while one identity (or one host's
unverifiable tokens) retrying in a loop costs a few events a second. Only a verified identity can open a key of
its own: garbage cannot make the audit unbounded. What a bucket holds back is counted and reported with that
key's next record (``suppressed``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from databricks_nats.integrations.identity.identity import Identity

__all__ = ["Auditor"]

log = logging.getLogger("databricks_nats.auth")

_CLIENT_FIELDS = ("host", "id", "name", "lang", "version", "kind")
_MAX_KEYS = 10_000  # buckets remembered; the least recently used are forgotten beyond


class _Bucket:
    __slots__ = ("level", "stamp", "suppressed")

    def __init__(self, level: float, stamp: float) -> None:
        self.level, self.stamp, self.suppressed = level, stamp, 0


class Auditor:
    """Rate-limits decisions and hands them to ``emit(event_type, data)`` (a databricks-nats client's ``emit``,
    or None to log only)."""

    def __init__(
        self,
        emit: Callable[[str, Mapping[str, Any]], Any] | None,
        per_second: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit, self.rate, self.burst, self.clock = emit, per_second, max(1.0, 2 * per_second), clock
        self.recorded = self.suppressed = 0
        self._buckets: OrderedDict[tuple[str, ...], _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def _take(self, key: tuple[str, ...]) -> int | None:
        """The number suppressed before this record when it may go now, else None (and it is counted)."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.pop(key, None) or _Bucket(self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > _MAX_KEYS:
                self._buckets.popitem(last=False)
            bucket.level = min(self.burst, bucket.level + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.level < 1:
                bucket.suppressed += 1
                self.suppressed += 1
                return None
            bucket.level -= 1
            held, bucket.suppressed = bucket.suppressed, 0
            return held

    def record(
        self,
        granted: bool,
        *,
        identity: Identity | None,
        rule: str | None,
        reason: str,
        permissions: Mapping[str, Any] | None = None,
        expires_at: float | None = None,
        client: Mapping[str, Any] | None = None,
        server: str | None = None,
    ) -> None:
        client_info = {k: client[k] for k in _CLIENT_FIELDS if client and client.get(k) not in (None, "")}
        if granted and identity is not None:
            key: tuple[str, ...] = ("granted", identity.name)
        else:
            key = ("denied", reason, str(client_info.get("host", "")), identity.name if identity else "")
        held = self._take(key)
        if held is None:
            return
        self.recorded += 1
        data = {
            "identity": identity.name if identity is not None else None,
            "kind": identity.kind if identity is not None else None,
            "rule": rule,
            "reason": reason,
            "permissions": dict(permissions or {}),
            "expires_at": _iso(expires_at),
            "client": client_info,
            "server": server,
            "suppressed": held,
        }
        outcome = "granted" if granted else "denied"
        log.info(
            "auth %s: %s (%s) client %s%s",
            outcome,
            data["identity"] or "unknown identity",
            f"rule {rule}" if granted else reason,
            client_info.get("host", "?"),
            f", {held} similar suppressed" if held else "",
        )
        if self.emit is not None:
            self.emit(f"system.auth.{outcome}", data)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat().replace("+00:00", "Z")
