"""The publisher's delivery half: publish what is ready, settle acks (core: flushes), retry, resolve flushes.

Poison events (issue 13): before it is sent, every event is checked against what the server accepts — the
HPUB control line (subject, reply inbox and the two sizes) within ``max_control_line`` (nats-server's default
4 KiB, or less once a server refused one: it does not announce it) and headers plus payload within the
``max_payload`` of the server's INFO (a payload over it is trimmed first). An event that still cannot fit,
that nats-py refuses (a subject or header it cannot write), or that JetStream refuses for its size, is
*dead-lettered*: published instead, with the same ``Nats-Msg-Id``, to ``<namespace>._dead.<reason>`` (inside
the namespace's stream) as its envelope with ``deadletterreason`` and ``deadlettersubject`` added (trimmed to
fit), and counted ``dropped.poison`` once stored (``dropped.poison_lost`` if even that is refused). It never
blocks the events behind it. When a server closes the connection for a control line or a payload it refused
(``-ERR``), the largest in-flight event is known to exceed its limit: the limit is lowered to just below it,
so that event (and any as large) is dead-lettered at its next attempt — one refusal per distinct offending
size at most, each reconnect backing off (``connection.py``).

``Publisher`` inherits this; it owns the state (settings, stats, memory queues, in-flight events, spool);
``_ingest``, ``_refill`` and ``_forget`` come from ``storage.py``, ``_no_stream`` from ``connection.py``.
Everything runs on the worker's event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from databricks_nats.model.events import CE_CONTENT_TYPE, Event, dead_letter, shrink
from databricks_nats.settings import Settings
from databricks_nats.transport.spool import Record, Spool
from databricks_nats.transport.stats import RateLimitedLog, Stats

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

__all__ = ["Delivery"]

_YIELD_EVERY = 128  # publishes between two yields to the loop (the socket is written when the loop runs)
MAX_CONTROL_LINE = 4096  # nats-server's default max_control_line; not in its INFO, so assumed until refused
# Bytes of the header block nats-py writes for our two headers, without the id's own characters.
HEADER_BYTES = len(f"NATS/1.0\r\nNats-Msg-Id: \r\nContent-Type: {CE_CONTENT_TYPE}\r\n\r\n")
FAST_ID = 64  # ids up to this long are covered by the fast size check (ours are 36)
_REFUSED_BY_CLIENT = {"MaxPayloadError": "too_large", "BadSubjectError": "bad_subject", "BadHeaderError": "bad_header"}
_JS_TOO_LARGE = (10054, 10097)  # JetStream: message size / header size exceeds the stream's maximum


class Delivery:
    """Sends ready events, tracks them in flight until acknowledged, and wakes ``flush`` callers when done."""

    settings: Settings
    stats_: Stats
    _say: RateLimitedLog
    _spool: Spool
    _nc: NATS | None
    _connected: bool
    _reply_prefix: str
    _max_bytes: int
    _inbox: deque[Event]
    _ingested: int
    _ready: deque[Record]
    _inflight: OrderedDict[int, tuple[Record, float]]
    _spilled: bool
    _unsaved: dict[int, Record]
    _acked: list[int]
    _acks: list[str]
    _unflushed: list[int]
    _flushing: set[asyncio.Task[None]]
    _flushers: list[tuple[int, asyncio.Future[None]]]
    _waiting: deque[tuple[int, asyncio.Future[None]]]
    _timer: asyncio.TimerHandle | None
    _loop: asyncio.AbstractEventLoop
    _work: asyncio.Event
    _dead: set[int]  # sequences published as dead letters (counted dropped.poison once acked)
    _max_payload: int  # headers + payload, from the server's INFO (or lower, once refused)
    _max_control: int  # the control line's arguments (subject, reply, sizes)
    _fast_subject: int  # subjects up to this long always fit the control line (set with the limits)

    if TYPE_CHECKING:  # provided by storage.py and connection.py; a runtime stub would shadow them in the MRO

        def _ingest(self) -> None: ...
        def _refill(self) -> None: ...
        def _forget(self, seqs: list[int], reason: str) -> None: ...
        def _lost_upto(self, boundary: int) -> bool: ...
        async def _no_stream(self) -> None: ...

    async def _send_forever(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            if self._inbox:  # core mode may have left events there until memory had room
                self._ingest()
            if self._spilled and len(self._ready) < 100:
                self._refill()
            room = self._connected and self._ready and len(self._inflight) < self.settings.max_inflight
            if room and not await self._send_some():
                await asyncio.sleep(0.2)  # the connection is failing; its callbacks will say more
                self._work.set()

    async def _send_some(self) -> bool:
        """Publish ready events while there is room in flight; False when publishing fails."""
        nc = self._nc
        assert nc is not None
        ready, inflight, publish = self._ready, self._inflight, nc.publish
        jetstream = self.settings.mode == "jetstream"
        prefix = self._reply_prefix if jetstream else ""
        most, max_bytes = self.settings.max_inflight, self._max_bytes
        sent = 0
        now = time.monotonic()
        rec: Record | None = None
        fast_subject = self._fast_subject
        try:
            while ready and len(inflight) < most and self._connected:
                rec = ready.popleft()
                if len(rec.payload) > max_bytes or len(rec.subject) > fast_subject or len(rec.id) > FAST_ID:
                    rec = self._fit(rec, len(prefix) + len(str(rec.seq)) if jetstream else 0)
                inflight[rec.seq] = (rec, now)
                reply = f"{prefix}{rec.seq}" if jetstream else ""
                await publish(rec.subject, rec.payload, reply, {"Nats-Msg-Id": rec.id, "Content-Type": CE_CONTENT_TYPE})
                sent += 1
                if not jetstream:
                    self._unflushed.append(rec.seq)
                rec = None
                if self._spilled and not ready:
                    self._refill()
                if not sent % _YIELD_EVERY:  # let the socket writer and the acks run: a pipeline, not batches
                    self._flush_core()
                    await asyncio.sleep(0)
                    now = time.monotonic()
        except Exception as e:  # noqa: BLE001 - disconnected, buffer full, payload too big
            assert rec is not None
            self._inflight.pop(rec.seq, None)
            refused = _REFUSED_BY_CLIENT.get(type(e).__name__)
            if refused is not None:  # nats-py will never send it as it is: never retry it as it is
                if rec.seq in self._dead:
                    self._drop_acked([rec.seq], "poison_lost")
                else:
                    ready.appendleft(self._dead_letter(rec, refused))
                return True
            ready.appendleft(rec)
            self.stats_.error("publish", f"{type(e).__name__}: {e}")
            return False
        finally:
            self.stats_.published += sent
            if sent and self._timer is None and jetstream:
                self._timer = self._loop.call_later(self.settings.ack_timeout, self._check_timeouts)
            self._flush_core()
        return True

    # ---- poison events ---------------------------------------------------------------------------

    def _shape_problem(self, rec: Record, reply_len: int) -> str | None:
        """Why the server would refuse this event as it is (``too_large``, ``control_line``), or None."""
        header = HEADER_BYTES + len(rec.id.encode())
        total = header + len(rec.payload)
        if total > self._max_payload:
            return "too_large"
        args = len(rec.subject.encode()) + reply_len + len(str(header)) + len(str(total)) + 3
        return "control_line" if args > self._max_control else None

    def _fit(self, rec: Record, reply_len: int) -> Record:
        """The event as it can be sent: trimmed to the server's size, or its dead letter when it cannot fit."""
        if rec.seq in self._dead:
            return rec  # a dead letter, made to fit
        budget = min(self._max_bytes, self._max_payload - HEADER_BYTES - len(rec.id.encode()))
        if len(rec.payload) > budget:  # encoded before the server told us its max_payload
            try:
                rec = rec._replace(payload=shrink(rec.payload, max(0, budget)))
            except Exception:  # noqa: BLE001 - not an envelope we can read (a damaged spool): it cannot be trimmed
                return self._dead_letter(rec, "too_large")
        why = self._shape_problem(rec, reply_len)
        return rec if why is None else self._dead_letter(rec, why)

    def _dead_letter(self, rec: Record, reason: str, budget: int | None = None) -> Record:
        """The dead letter replacing a poison event: same sequence and id, on ``<namespace>._dead.<reason>``."""
        self._dead.add(rec.seq)
        self.stats_.error(
            "poison",
            f"event {rec.id[:64]} ({len(rec.subject)}-character subject, {len(rec.payload)} bytes) "
            f"cannot be published ({reason}); dead-lettered",
        )
        self._say(
            logging.WARNING,
            "poison",
            "databricks-nats: event %s cannot be published as it is (%s: %d-character subject, %d bytes); "
            "it goes to %s._dead.%s instead",
            rec.id[:64],
            reason,
            len(rec.subject),
            len(rec.payload),
            self.settings.namespace,
            reason,
        )
        msg_id = rec.id if len(rec.id) <= FAST_ID else "dead-" + hashlib.sha256(rec.id.encode()).hexdigest()[:32]
        room = self._max_payload - HEADER_BYTES - len(msg_id)  # the server's bound: keep the event whole if it can
        room = room if budget is None else min(room, budget)
        subject = f"{self.settings.namespace}._dead.{reason}"
        return Record(rec.seq, msg_id, subject, dead_letter(rec.payload, rec.subject, reason, max(0, room)))

    def _flush_core(self) -> None:
        """Core mode: a flush (PING/PONG) for what was published since the last one; several may be pending."""
        if self._unflushed:
            seqs, self._unflushed = self._unflushed, []
            task = self._loop.create_task(self._core_flush(seqs))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _core_flush(self, seqs: list[int]) -> None:
        assert self._nc is not None
        try:
            await self._nc.flush(timeout=max(1, int(self.settings.ack_timeout)))
        except Exception as e:  # noqa: BLE001 - not flushed: send again (in order) after reconnect
            self.stats_.error("flush", f"{type(e).__name__}: {e}")
            self._requeue(list(self._inflight))
            return
        self._settle(seqs)

    def _requeue(self, seqs: list[int]) -> None:
        """Put in-flight events back at the front of the ready queue, oldest first."""
        for seq in sorted(seqs, reverse=True):
            entry = self._inflight.pop(seq, None)
            if entry is not None:
                self._ready.appendleft(entry[0])
        self._work.set()

    def _check_timeouts(self) -> None:
        self._timer = None
        deadline = time.monotonic() - self.settings.ack_timeout
        late = [seq for seq, (_, sent) in self._inflight.items() if sent <= deadline]
        if late:
            self.stats_.retried += len(late)
            self.stats_.error(
                "ack_timeout", f"{len(late)} publish(es) not acknowledged in {self.settings.ack_timeout:g}s"
            )
            self._requeue(late)
        if self._inflight:
            oldest = next(iter(self._inflight.values()))[1]
            delay = max(0.05, oldest + self.settings.ack_timeout - time.monotonic())
            self._timer = self._loop.call_later(delay, self._check_timeouts)

    async def _on_ack(self, msg: Msg) -> None:
        body = msg.data
        if not msg.headers and b'"error"' not in body and b'"duplicate"' not in body:  # the common ack
            if not self._acks:
                self._loop.call_soon(self._settle_acks)
            self._acks.append(msg.subject)
            return
        seq = int(msg.subject.rsplit(".", 1)[1])
        entry = self._inflight.pop(seq, None)
        if entry is None:
            return  # a late ack for an event already re-sent or acked
        rec, sent = entry
        if msg.headers and msg.headers.get("Status") == "503":
            self._inflight[seq] = entry
            await self._no_stream()
            return
        try:
            resp = json.loads(body)
        except ValueError:
            resp = {"error": {"description": "unreadable ack"}}
        err = resp.get("error")
        if err and isinstance(err, dict) and err.get("err_code") in _JS_TOO_LARGE:  # the stream will never take it
            self.stats_.error("jetstream", str(err.get("description", err))[:200])
            if seq in self._dead:
                self._drop_acked([seq], "poison_lost")
            else:
                self._ready.appendleft(self._dead_letter(rec, "stream_limit", budget=min(1024, self._max_bytes)))
                self._work.set()
            return
        if err:
            self.stats_.error("jetstream", str(err.get("description", err))[:200])
            self._say(logging.WARNING, "js_error", "databricks-nats: JetStream refused an event: %s", err)
            self._inflight[seq] = (rec, sent)  # retried by the ack timer
            return
        if resp.get("duplicate"):
            self.stats_.duplicates += 1
        self.stats_.ack_latency(time.monotonic() - sent)
        self._ack([seq])

    def _settle_acks(self) -> None:
        """Handle the plain acks received since the last loop iteration in one go."""
        subjects, self._acks = self._acks, []
        cut = len(self._reply_prefix)  # reply subjects are <prefix><seq>
        self._settle([int(subject[cut:]) for subject in subjects])

    def _settle(self, seqs: list[int]) -> None:
        """These in-flight events are acknowledged (core: flushed); a sequence no longer in flight is ignored."""
        pop = self._inflight.pop
        sent = [(seq, entry[1]) for seq in seqs if (entry := pop(seq, None)) is not None]
        now = time.monotonic()
        self.stats_.ack_latencies([now - t for _, t in sent])
        self._ack([seq for seq, _ in sent])

    def _ack(self, seqs: list[int]) -> None:
        acked = len(seqs)
        if self._dead:  # dead letters stored: the events are accounted as dropped (poison), kept on _dead
            dead = [seq for seq in seqs if seq in self._dead]
            if dead:
                self._dead.difference_update(dead)
                self.stats_.dropped["poison"] += len(dead)
                acked -= len(dead)
        self.stats_.acked += acked
        self._discard(seqs)
        self._work.set()

    def _drop_acked(self, seqs: list[int], reason: str) -> None:
        if self._dead:
            self._dead.difference_update(seqs)
        self._forget(seqs, reason)
        self._discard(seqs)

    def _discard(self, seqs: list[int]) -> None:
        """Events that are done: forget the unsaved ones, batch-delete the saved ones from the spool."""
        unsaved = self._unsaved
        on_disk = [seq for seq in seqs if unsaved.pop(seq, None) is None]
        if on_disk:
            if not self._acked:
                self._loop.call_soon(self._commit_acks)
            self._acked.extend(on_disk)
        elif self._flushers:
            self._update_flushers()

    def _commit_acks(self) -> None:
        seqs, self._acked = self._acked, []
        try:
            self._spool.delete(seqs)
        except Exception as e:  # noqa: BLE001 - re-sent later; JetStream drops the duplicates
            self.stats_.error("spool", f"{type(e).__name__}: {e}")
        self._update_flushers()

    # ---- flush ----------------------------------------------------------------------------------

    async def _flush(self) -> bool:
        """Wait until every event handed over before the call is acknowledged (or flushed, in core mode).

        The wait is on the last sequence given to those events: known once the inbox is ingested up to
        the call (``_waiting`` until then).
        """
        fut: asyncio.Future[bool] = self._loop.create_future()
        self._waiting.append((self._ingested + len(self._inbox), fut))  # type: ignore[arg-type]
        self._ingest()
        self._work.set()
        return await fut  # True when one of those events was dropped (storage.py: _lost_upto)

    def _update_flushers(self) -> None:
        if not self._flushers:
            return
        lowest = self._spool.min_seq()
        if self._unsaved:
            first = next(iter(self._unsaved))  # inserted in ascending order
            lowest = first if lowest is None else min(lowest, first)
        still = []
        for boundary, fut in self._flushers:
            if fut.done():
                continue
            if lowest is None or lowest > boundary:
                fut.set_result(self._lost_upto(boundary))  # type: ignore[arg-type]
            else:
                still.append((boundary, fut))
        self._flushers = still
