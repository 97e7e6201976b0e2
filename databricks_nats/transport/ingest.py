"""The publisher's ingest part: the inbox callers append to, its cap, and the encoding of events into records.

Owns the inbox (a deque: ``emit`` from any thread appends, the worker pops), the count of events taken
from it (``ingested``), the last sequence given out (``last_seq``) and the flush boundaries not yet reached
(a flush waits for the events handed over before it: a count of events until they are encoded, then the
last sequence among them, handed to the sender's waiters through ``on_boundary``).

``spool_sync="immediate"`` (or a forked child): ``put`` encodes the event and commits it to the spool in
the caller's thread before returning (``persist``); the inbox then carries the stored records.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from databricks_nats.model.events import Event
from databricks_nats.transport.poison import Limits
from databricks_nats.transport.spool import Record, Spool
from databricks_nats.transport.stats import RateLimitedLog, Stats

__all__ = ["Ingest"]

_new = tuple.__new__  # Record(*fields) without the Python-level __new__ of a NamedTuple


class Ingest:
    """Takes events from callers (any thread) and encodes them into sequenced records (the worker)."""

    def __init__(
        self,
        encoder: Callable[..., tuple[str, bytes]],
        limits: Limits,
        spool: Spool,
        stats: Stats,
        say: RateLimitedLog,
        *,
        cap: int,
        immediate: bool,
    ) -> None:
        self.inbox: deque[Any] = deque()  # events (immediate mode: stored records)
        self.cap = cap
        self.immediate = immediate
        self.closed = False
        self.ingested = 0
        self.last_seq = spool.max_seq()  # replayed events count as emitted before any flush
        self._encode = encoder
        self._limits = limits
        self._spool = spool  # immediate mode only: written through in the caller's thread
        self._stats = stats
        self._say = say
        self._waiting: deque[tuple[int, asyncio.Future[bool]]] = deque()  # (events ingested to wait for, future)
        self.on_boundary: Callable[[int, asyncio.Future[bool]], None] = _unwired  # the sender's flush waiters

    # ---- caller side (any thread) -------------------------------------------------------------

    def put(self, event: Event) -> bool:
        """Queue one event; False (counted ``dropped.queue_full``) when the inbox is at its cap."""
        if len(self.inbox) >= self.cap:
            self._stats.dropped["queue_full"] += 1  # the worker is wedged; never grow without bound
            return False
        if self.immediate:
            self.persist(event)
        else:
            self.inbox.append(event)
        return True

    def put_many(self, events: Iterable[Event]) -> int:
        """Queue a batch (each counted like ``put``); the number accepted."""
        inbox, cap, n, full = self.inbox, self.cap, 0, 0
        immediate = self.immediate
        for event in events:
            if len(inbox) >= cap:
                full += 1
            elif immediate:
                self.persist(event)
                n += 1
            else:
                inbox.append(event)
                n += 1
        if full:
            self._stats.dropped["queue_full"] += full
        return n

    def persist(self, event: Event) -> None:
        """Immediate mode, in the caller's thread: encode, commit to the spool, then queue the stored record.

        The spool's lock orders sequences, rows and the inbox alike; nothing raises (fail-open).
        """
        if self.closed:
            self._stats.dropped["closed"] += 1
            return
        encoded = self._encode_one(event)
        if encoded is None:
            return
        spool = self._spool
        with spool.lock:  # type: ignore[attr-defined]
            rec = _new(Record, (spool.max_seq() + 1, event.id, *encoded))
            try:
                dropped = spool.append([rec])
            except Exception as e:  # noqa: BLE001 - never raise into emit(); the spool itself does not
                self._stats.error("spool", f"{type(e).__name__}: {e}")
                dropped = [rec.seq]
            if dropped:
                spool.note_drops("spool_full", dropped)  # type: ignore[attr-defined]
                if dropped[-1] == rec.seq:
                    return
            self.inbox.append(rec)

    def emitted(self) -> int:
        return self.ingested + len(self.inbox) + self._stats.dropped["queue_full"]

    # ---- worker side ---------------------------------------------------------------------------

    def wait(self, fut: asyncio.Future[bool]) -> None:
        """A flush: ``fut`` waits for every event handed over so far (resolved by the sender's waiters)."""
        self._waiting.append((self.ingested + len(self.inbox), fut))

    def encode(self, most: int, skip_upto: int) -> tuple[int, list[Record]]:
        """Take up to ``most`` events (never past the next flush's boundary): (how many, their records).

        Invalid events are dropped and counted; immediate mode's records at or below ``skip_upto`` were
        read back from the spool meanwhile and are skipped.
        """
        inbox = self.inbox
        limit = min(most, len(inbox))
        if self._waiting:  # stop at the next flush's boundary, to know the last sequence before it
            limit = min(limit, self._waiting[0][0] - self.ingested)
        records: list[Record] = []
        seq = self.last_seq
        if self.immediate:  # encoded and on disk already (persist)
            for _ in range(limit):
                rec = inbox.popleft()
                seq = max(seq, rec.seq)
                if rec.seq > skip_upto:
                    records.append(rec)
        else:
            encode, max_bytes, append = self._encode, self._limits.max_bytes, records.append
            for _ in range(limit):
                event = inbox.popleft()
                try:
                    subject, payload = encode(event, max_bytes=max_bytes)
                except Exception as e:  # noqa: BLE001 - a bad event is dropped, counted and logged
                    self._invalid(event, e)
                    continue
                seq += 1
                append(_new(Record, (seq, event.id, subject, payload)))
        self.last_seq = seq
        self.ingested += limit
        if self._stats.by_source is not None:  # metrics are on: encoded events per source
            self._stats.count_sources([r.subject for r in records], 0)
        waiting = self._waiting
        while waiting and waiting[0][0] <= self.ingested:
            self.on_boundary(seq, waiting.popleft()[1])
        return limit, records

    def advance(self, seq: int) -> None:
        """Sequences up to ``seq`` were given out elsewhere (rows adopted from a dead peer)."""
        self.last_seq = max(self.last_seq, seq)

    def _encode_one(self, event: Event) -> tuple[str, bytes] | None:
        try:
            return self._encode(event, max_bytes=self._limits.max_bytes)
        except Exception as e:  # noqa: BLE001 - a bad event is dropped, counted and logged
            self._invalid(event, e)
            return None

    def _invalid(self, event: Event, e: Exception) -> None:
        self._stats.dropped["invalid"] += 1
        self._stats.error("invalid_event", f"{type(e).__name__}: {e}")
        self._say(logging.WARNING, "invalid", "databricks-nats: dropped invalid event %s: %s", event.type, e)


def _unwired(seq: int, fut: asyncio.Future[bool]) -> None:
    raise RuntimeError("Ingest.on_boundary is not wired to a sender")
