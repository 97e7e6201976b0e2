"""Loop protection for whatever reacts to events: ``subscribe``, the Airflow trigger and sensor, the Prefect bridge.

A ``LoopGuard`` belongs to one reactor, named by its target (``airflow:dag/<dag_id>``,
``prefect:deployment/<name>``, ``subscribe:<durable>``). ``allows(envelope)`` is False for an event whose chain is
already ``hop_limit`` hops deep or already went through this target (``model.causation.loop_reason``); each
refusal is counted (``refused``), logged (once per 30 s per reason) and announced as ``system.loop.detected``
through the given client or the default one: once per chain (the correlation id) and ``report_every`` seconds,
a refusal in between is only counted, and the chain's next report carries how many were held back since its last
(``suppressed``), so a loop that keeps feeding itself shows up again with its rate. Never raises.

JetStream de-duplication (``Nats-Msg-Id``) stays the replay protection for publishes, and each consumer's acks
make it act once per event; the guard is what stops a chain of reactions that feeds itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from databricks_nats.model.causation import HOP_LIMIT, Causation, loop_reason
from databricks_nats.transport.stats import RateLimitedLog

__all__ = ["LoopGuard"]

log = logging.getLogger("databricks_nats")

_REMEMBERED = 1024  # chains already announced
REPORT_EVERY = 300.0  # seconds between two reports of one chain


class LoopGuard:
    def __init__(
        self,
        target: str | None,
        hop_limit: int = HOP_LIMIT,
        client: Any = None,
        report_every: float = REPORT_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target, self.hop_limit, self.client = target, hop_limit, client
        self.report_every, self.clock = report_every, clock
        self.refused = 0
        self._say = RateLimitedLog(log)
        self._lock = threading.Lock()  # a trigger's guard outlives reconnects; bridges may share one
        # correlation id -> [when last reported, refusals held back since]
        self._announced: OrderedDict[str, list[float]] = OrderedDict()

    def allows(self, envelope: Mapping[str, Any]) -> bool:
        """True when acting on this event continues no loop; else counts, logs, announces and says False."""
        reason = loop_reason(envelope, self.target, self.hop_limit)
        if reason is None:
            return True
        self.refused += 1
        own = Causation.of(envelope)
        self._say(
            logging.WARNING,
            "loop",
            "databricks-nats: not acting on event %s (%s) at %s: %s",
            envelope.get("id"),
            envelope.get("type"),
            self.target or "this subscription",
            reason,
        )
        chain = own.correlation_id if own else str(envelope.get("id"))
        suppressed = self._held_back(chain)
        if suppressed is not None:
            self._announce(envelope, own, reason, suppressed)
        return False

    def _held_back(self, chain: str) -> int | None:
        """How many refusals of ``chain`` were held back when it is due a report now, else None (counted)."""
        now = self.clock()
        with self._lock:
            seen = self._announced.pop(chain, None)
            if seen is not None and now - seen[0] < self.report_every:
                seen[1] += 1
                self._announced[chain] = seen
                return None
            self._announced[chain] = [now, 0]
            if len(self._announced) > _REMEMBERED:
                self._announced.popitem(last=False)
            return int(seen[1]) if seen is not None else 0

    def _announce(self, envelope: Mapping[str, Any], own: Causation | None, reason: str, suppressed: int) -> None:
        try:
            from databricks_nats.client import current_client

            client = self.client if self.client is not None else current_client()
            client.emit(
                "system.loop.detected",
                {
                    "event_id": str(envelope.get("id")),
                    "event_type": str(envelope.get("type", "")).removeprefix("databricks.") or None,
                    "correlation_id": own.correlation_id if own else None,
                    "hop": own.hop if own else 0,
                    "via": list(own.via) if own else [],
                    "target": self.target,
                    "reason": reason,
                    "suppressed": suppressed,
                },
                causation=Causation.from_envelope(envelope, self.target),
            )
        except Exception as e:  # noqa: BLE001 - the announcement is best effort: never raise into a reactor
            log.debug("databricks-nats: system.loop.detected not published: %s", type(e).__name__)
