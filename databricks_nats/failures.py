"""Publishing failures as log lines: the first of a kind at WARNING, repeats at DEBUG (every 1000th at WARNING).

Each client has its own ``Failures``; ``fail_unconfigured`` logs what failed before any client could be made (bad
settings in the environment). URLs are redacted and long texts clipped: a failure never logs a secret.
"""

from __future__ import annotations

import logging

from databricks_nats.values import redact_url

__all__ = ["Failures", "fail_unconfigured"]

log = logging.getLogger("databricks_nats")


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more characters]"


class Failures:
    """Logs publishing failures: the first of a kind at WARNING, repeats at DEBUG (every 1000th at WARNING)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}  # (what, exception type) -> failures with the publisher below
        self._of: object = None

    def log(self, e: Exception, what: str, transport: object) -> str:
        text = _clip(redact_url(f"{type(e).__name__}: {e}"))
        if self._of is not transport or len(self._seen) > 256:  # a new publisher warns afresh
            self._seen.clear()
            self._of = transport
        key = (what.split("(", 1)[0], type(e).__name__)
        seen = self._seen[key] = self._seen.get(key, 0) + 1
        level = logging.WARNING if seen == 1 or seen % 1000 == 0 else logging.DEBUG
        repeat = f" ({seen} times so far)" if seen > 1 else ""
        log.log(level, "databricks-nats: %s failed (%s)%s; training continues", _clip(what), text, repeat)
        return text


_unconfigured = Failures()  # failures before any client could be made (bad settings in the environment)


def fail_unconfigured(e: Exception, what: str) -> None:
    """Log a failure that happened before a client existed (its settings did not resolve); never raises."""
    _unconfigured.log(e, what, None)
