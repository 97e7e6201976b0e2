"""What one message may take on the server, and the dead letters of events that cannot fit (issue 13).

``Limits`` belongs to the link (``connection.py``): set from the server's INFO at every (re)connect and
lowered when a server refuses a message it did not announce a limit for. The ingest part reads its
``max_bytes`` (the event size cap) and the sender reads the rest, through ``DeadLetters``.

Before it is sent, every event is checked against what the server accepts — the HPUB control line
(subject, reply inbox and the two sizes) within ``max_control_line`` (nats-server's default 4 KiB, or less
once a server refused one: it does not announce it) and headers plus payload within the ``max_payload`` of
the server's INFO (a payload over it is trimmed first). An event that still cannot fit, that nats-py
refuses (a subject or header it cannot write), or that JetStream refuses for its size, is *dead-lettered*:
published instead, with the same ``Nats-Msg-Id``, to ``<namespace>._dead.<reason>`` (inside the namespace's
stream) as its envelope with ``deadletterreason`` and ``deadlettersubject`` added (trimmed to fit), and
counted ``dropped.poison`` once stored (``dropped.poison_lost`` if even that is refused). It never blocks
the events behind it.
"""

from __future__ import annotations

import hashlib
import logging

from databricks_nats.model.events import dead_letter, shrink
from databricks_nats.transport.spool import Record
from databricks_nats.transport.stats import RateLimitedLog, Stats
from databricks_nats.transport.wire import FAST_ID, HEADER_BYTES, MAX_CONTROL_LINE

__all__ = ["DeadLetters", "Limits"]


class Limits:
    """The connected server's limits for one message (owned by the link; read by ingest and the sender)."""

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.max_bytes = max_event_bytes  # the event size cap, leaving room for the headers
        self.max_payload = 1024 * 1024  # headers + payload, from the server's INFO (or lower, once refused)
        self.max_control = MAX_CONTROL_LINE  # the control line's arguments (subject, reply, sizes)
        self.fast_subject = 0  # subjects up to this long always fit the control line (0: not connected yet)
        self.learned_payload: int | None = None  # a max_payload lower than announced, learned from a refusal

    def set(self, announced: int, reply_len: int) -> None:
        """At (re)connect: the server's ``max_payload`` and the reply prefix our publishes carry."""
        self.max_payload = announced if self.learned_payload is None else min(announced, self.learned_payload)
        self.max_bytes = min(self.max_event_bytes, max(256, self.max_payload - HEADER_BYTES - FAST_ID))
        sizes = 2 * len(str(self.max_payload)) + 3  # the two sizes and the three spaces of HPUB's arguments
        self.fast_subject = self.max_control - reply_len - 20 - sizes

    def learn(self, kind: str, largest: int) -> None:
        """The server refused a message of this size (``too_large``) or control line (``control_line``)."""
        if kind == "too_large":
            known = self.learned_payload
            self.learned_payload = largest - 1 if known is None else min(known, largest - 1)
        else:
            self.max_control = min(self.max_control, largest - 1)

    @staticmethod
    def sizes(rec: Record, reply_len: int) -> tuple[int, int]:
        """(headers + payload, control line arguments) of this event as it would be sent."""
        header = HEADER_BYTES + len(rec.id.encode())
        total = header + len(rec.payload)
        return total, len(rec.subject.encode()) + reply_len + len(str(header)) + len(str(total)) + 3

    def problem(self, rec: Record, reply_len: int) -> str | None:
        """Why the server would refuse this event as it is (``too_large``, ``control_line``), or None."""
        total, args = self.sizes(rec, reply_len)
        if total > self.max_payload:
            return "too_large"
        return "control_line" if args > self.max_control else None


class DeadLetters:
    """The sender's poison check: fits an event to the limits, or replaces it by its dead letter.

    Owns the set of sequences published as dead letters (counted ``dropped.poison`` once acked).
    """

    def __init__(self, namespace: str, limits: Limits, stats: Stats, say: RateLimitedLog) -> None:
        self.namespace = namespace
        self.limits = limits
        self.stats = stats
        self.say = say
        self.dead: set[int] = set()

    def __contains__(self, seq: int) -> bool:
        return seq in self.dead

    def fit(self, rec: Record, reply_len: int) -> Record:
        """The event as it can be sent: trimmed to the server's size, or its dead letter when it cannot fit."""
        if rec.seq in self.dead:
            return rec  # a dead letter, made to fit
        limits = self.limits
        budget = min(limits.max_bytes, limits.max_payload - HEADER_BYTES - len(rec.id.encode()))
        if len(rec.payload) > budget:  # encoded before the server told us its max_payload
            try:
                rec = rec._replace(payload=shrink(rec.payload, max(0, budget)))
            except Exception:  # noqa: BLE001 - not an envelope we can read (a damaged spool): it cannot be trimmed
                return self.letter(rec, "too_large")
        why = limits.problem(rec, reply_len)
        return rec if why is None else self.letter(rec, why)

    def letter(self, rec: Record, reason: str, budget: int | None = None) -> Record:
        """The dead letter replacing a poison event: same sequence and id, on ``<namespace>._dead.<reason>``."""
        self.dead.add(rec.seq)
        self.stats.error(
            "poison",
            f"event {rec.id[:64]} ({len(rec.subject)}-character subject, {len(rec.payload)} bytes) "
            f"cannot be published ({reason}); dead-lettered",
        )
        self.say(
            logging.WARNING,
            "poison",
            "databricks-nats: event %s cannot be published as it is (%s: %d-character subject, %d bytes); "
            "it goes to %s._dead.%s instead",
            rec.id[:64],
            reason,
            len(rec.subject),
            len(rec.payload),
            self.namespace,
            reason,
        )
        msg_id = rec.id if len(rec.id) <= FAST_ID else "dead-" + hashlib.sha256(rec.id.encode()).hexdigest()[:32]
        room = self.limits.max_payload - HEADER_BYTES - len(msg_id)  # the server's bound: keep it whole if it can
        room = room if budget is None else min(room, budget)
        subject = f"{self.namespace}._dead.{reason}"
        return Record(rec.seq, msg_id, subject, dead_letter(rec.payload, rec.subject, reason, max(0, room)))

    def stored(self, seqs: list[int]) -> int:
        """Of these acknowledged events, how many were dead letters (now counted ``dropped.poison``)."""
        if not self.dead:
            return 0
        dead = [seq for seq in seqs if seq in self.dead]
        if dead:
            self.dead.difference_update(dead)
            self.stats.dropped["poison"] += len(dead)
        return len(dead)

    def forget(self, seqs: list[int]) -> None:
        if self.dead:
            self.dead.difference_update(seqs)
