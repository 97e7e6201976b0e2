"""The publisher's sender part: publish what is ready, settle acks (core: flushes), retry, resolve flushes.

Owns the in-flight window (``inflight``: sequence -> (record, time sent), at most ``max_inflight``), the
plain acks awaiting settlement, core mode's pending flushes, the ack timer, the flush waiters and the dead
letters (``poison.py``). Neighbours: the buffer (``ready`` to take from, ``refill``, ``done``, ``forget``,
``lowest_pending``, ``lost_upto``), the link (``connected``, ``reply_prefix``, ``limits``, ``write``,
``publish``, ``flush``, ``no_stream``) and the publisher (``work``: send again).

The path of an event here: ``send_some`` pops it from ``ready``, checks its shape against the server's
limits, records it in flight and builds its HPUB frame (``wire.py``); every ``_YIELD_EVERY`` frames the
batch is handed to the link (``write``, straight into nats-py's output buffer) and the loop runs, so the
socket is written and acks are handled while sending (a pipeline). An event whose subject or id is not
plain, or that does not fit, goes through nats-py's ``publish`` instead (``link.publish``), whose refusals
become dead letters. JetStream acks (``on_ack``) are settled in batches, once per loop iteration; an ack
that does not come within ``ack_timeout`` (or a reconnect) sends the event again with the same
``Nats-Msg-Id``, so the stream stores it once. Core mode: a flush (PING/PONG) per batch settles it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from databricks_nats.settings import Settings
from databricks_nats.transport.poison import DeadLetters, Limits
from databricks_nats.transport.spool import Record
from databricks_nats.transport.stats import RateLimitedLog, Stats
from databricks_nats.transport.wire import FAST_ID, frame, plain_id, plain_subject

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["Sender"]

_YIELD_EVERY = 128  # publishes between two yields to the loop (the socket is written when the loop runs)
_REFUSED_BY_CLIENT = {"MaxPayloadError": "too_large", "BadSubjectError": "bad_subject", "BadHeaderError": "bad_header"}
_JS_TOO_LARGE = (10054, 10097)  # JetStream: message size / header size exceeds the stream's maximum
_SUBJECTS_KEPT = 4096  # plain subjects remembered (checked once each)
_NONE: frozenset[str] = frozenset()


class Store(Protocol):
    """What the sender asks of the buffer."""

    ready: deque[Record]
    spilled: bool

    def refill(self) -> None: ...
    def done(self, seqs: list[int]) -> None: ...
    def forget(self, seqs: list[int], reason: str) -> None: ...
    def lowest_pending(self) -> int | None: ...
    def lost_upto(self, boundary: int) -> bool: ...


class Wire(Protocol):
    """What the sender asks of the link."""

    connected: bool
    fast: bool
    reply_prefix: str
    limits: Limits

    async def write(self, frames: list[bytes]) -> None: ...
    async def publish(self, rec: Record, reply: str) -> None: ...
    async def flush(self, timeout: float) -> None: ...
    async def no_stream(self) -> None: ...


class Sender:
    """Sends ready events, tracks them in flight until acknowledged, and wakes ``flush`` callers when done."""

    def __init__(
        self,
        settings: Settings,
        buffer: Store,
        link: Wire,
        stats: Stats,
        say: RateLimitedLog,
        loop: asyncio.AbstractEventLoop,
        *,
        work: Callable[[], None],
    ) -> None:
        self.max_inflight = settings.max_inflight
        self.ack_timeout = settings.ack_timeout
        self.jetstream = settings.mode == "jetstream"
        self.buffer, self.link = buffer, link
        self.dead = DeadLetters(settings.namespace, link.limits, stats, say)
        self.inflight: OrderedDict[int, tuple[Record, float]] = OrderedDict()
        self.flushing: set[asyncio.Task[None]] = set()  # core: flushes awaiting their PONG
        self._stats, self._say, self._loop, self._work = stats, say, loop, work
        self._acks: list[bytes | str] = []  # reply subjects of plain JetStream acks, settled once per iteration
        self._unflushed: list[int] = []  # core: published since the last flush
        self._timer: asyncio.TimerHandle | None = None
        self._flushers: list[tuple[int, asyncio.Future[bool]]] = []  # (last sequence to wait for, future)
        self._subjects: set[str] = set()  # subjects known plain: their events take the fast path

    def __len__(self) -> int:
        return len(self.inflight)

    def in_flight(self) -> Iterator[tuple[int, Record]]:
        return ((seq, entry[0]) for seq, entry in self.inflight.items())

    # ---- sending ---------------------------------------------------------------------------------

    async def send_some(self) -> bool:
        """Publish ready events while there is room in flight; False when publishing fails."""
        link, ready, inflight = self.link, self.buffer.ready, self.inflight
        jetstream, most = self.jetstream, self.max_inflight
        prefix = link.reply_prefix if jetstream else ""
        limits = self.link.limits
        max_bytes, fast_subject = limits.max_bytes, limits.fast_subject
        subjects = self._subjects if link.fast else _NONE  # nats-py's buffer unknown: all through its publish
        frames: list[bytes] = []
        batch: list[int] = []  # the sequences of ``frames``
        sent = 0
        now = time.monotonic()
        rec: Record | None = None
        try:
            while ready and len(inflight) < most and link.connected:
                rec = ready.popleft()
                seq = rec.seq
                reply = f"{prefix}{seq}" if jetstream else ""
                if (
                    len(rec.payload) > max_bytes
                    or len(rec.subject) > fast_subject
                    or rec.subject not in subjects
                    or plain_id(rec.id) is None
                ):  # the slow path: checked by nats-py's publish
                    if frames:  # in order: what was built before goes first
                        await link.write(frames)
                        frames, batch = [], []
                    if len(rec.payload) > max_bytes or len(rec.subject) > fast_subject or len(rec.id) > FAST_ID:
                        rec = self.dead.fit(rec, len(prefix) + len(str(seq)) if jetstream else 0)
                    inflight[seq] = (rec, now)
                    await link.publish(rec, reply)
                    self._learn(rec)
                else:
                    inflight[seq] = (rec, now)
                    frames.append(frame(rec.subject, reply, rec.id, rec.payload))
                    batch.append(seq)
                sent += 1
                if not jetstream:
                    self._unflushed.append(seq)
                rec = None
                if self.buffer.spilled and not ready:
                    self.buffer.refill()
                if not sent % _YIELD_EVERY:  # let the socket writer and the acks run: a pipeline, not batches
                    if frames:
                        await link.write(frames)
                        frames, batch = [], []
                    self._flush_core()
                    await asyncio.sleep(0)
                    now = time.monotonic()
            if frames:
                await link.write(frames)
                batch = []
        except Exception as e:  # noqa: BLE001 - disconnected, buffer full, payload too big
            sent -= len(batch)
            ok = True
            if rec is None:
                self._stats.error("publish", f"{type(e).__name__}: {e}")
                ok = False
            else:
                inflight.pop(rec.seq, None)
                refused = _REFUSED_BY_CLIENT.get(type(e).__name__)
                if refused is not None:  # nats-py will never send it as it is: never retry it as it is
                    if rec.seq in self.dead:
                        self.drop([rec.seq], "poison_lost")
                    else:
                        ready.appendleft(self.dead.letter(rec, refused))
                else:
                    ready.appendleft(rec)
                    self._stats.error("publish", f"{type(e).__name__}: {e}")
                    ok = False
            if batch:  # built, never written: sent again, in order (before ``rec``), never flushed as sent
                self.requeue(batch)
                unsent = set(batch)
                self._unflushed = [seq for seq in self._unflushed if seq not in unsent]
            return ok
        finally:
            self._stats.published += sent
            if sent and self._timer is None and jetstream:
                self._timer = self._loop.call_later(self.ack_timeout, self.check_timeouts)
            self._flush_core()
        return True

    def _learn(self, rec: Record) -> None:
        """A subject nats-py took as it is: its next events take the fast path."""
        if rec.seq not in self.dead and plain_subject(rec.subject):
            if len(self._subjects) >= _SUBJECTS_KEPT:
                self._subjects.clear()
            self._subjects.add(rec.subject)

    def _flush_core(self) -> None:
        """Core mode: a flush (PING/PONG) for what was published since the last one; several may be pending."""
        if self._unflushed:
            seqs, self._unflushed = self._unflushed, []
            task = self._loop.create_task(self._core_flush(seqs))
            self.flushing.add(task)
            task.add_done_callback(self.flushing.discard)

    async def _core_flush(self, seqs: list[int]) -> None:
        try:
            await self.link.flush(max(1, int(self.ack_timeout)))
        except Exception as e:  # noqa: BLE001 - not flushed: send again (in order) after reconnect
            self._stats.error("flush", f"{type(e).__name__}: {e}")
            self.requeue(list(self.inflight))
            return
        self.settle(seqs)

    def requeue(self, seqs: list[int]) -> None:
        """Put in-flight events back at the front of the ready queue, oldest first."""
        for seq in sorted(seqs, reverse=True):
            entry = self.inflight.pop(seq, None)
            if entry is not None:
                self.buffer.ready.appendleft(entry[0])
        self._work()

    def requeue_all(self) -> None:
        self.requeue(list(self.inflight))

    def check_timeouts(self) -> None:
        self._timer = None
        deadline = time.monotonic() - self.ack_timeout
        late = [seq for seq, (_, sent) in self.inflight.items() if sent <= deadline]
        if late:
            self._stats.retried += len(late)
            self._stats.error("ack_timeout", f"{len(late)} publish(es) not acknowledged in {self.ack_timeout:g}s")
            self.requeue(late)
        if self.inflight:
            oldest = next(iter(self.inflight.values()))[1]
            delay = max(0.05, oldest + self.ack_timeout - time.monotonic())
            self._timer = self._loop.call_later(delay, self.check_timeouts)

    # ---- acknowledgements ------------------------------------------------------------------------

    async def on_ack(self, msg: Msg) -> None:
        """A JetStream ack (the reply to ``<reply prefix><sequence>``)."""
        body = msg.data
        if not msg.headers and b'"error"' not in body and b'"duplicate"' not in body:  # the common ack
            self.plain_ack(msg.subject)
            return
        seq = int(msg.subject.rsplit(".", 1)[1])
        entry = self.inflight.pop(seq, None)
        if entry is None:
            return  # a late ack for an event already re-sent or acked
        rec, sent = entry
        if msg.headers and msg.headers.get("Status") == "503":
            self.inflight[seq] = entry
            await self.link.no_stream()
            return
        try:
            resp = json.loads(body)
        except ValueError:
            resp = {"error": {"description": "unreadable ack"}}
        err = resp.get("error")
        if err and isinstance(err, dict) and err.get("err_code") in _JS_TOO_LARGE:  # the stream will never take it
            self._stats.error("jetstream", str(err.get("description", err))[:200])
            if seq in self.dead:
                self.drop([seq], "poison_lost")
            else:
                budget = min(1024, self.link.limits.max_bytes)
                self.buffer.ready.appendleft(self.dead.letter(rec, "stream_limit", budget=budget))
                self._work()
            return
        if err:
            self._stats.error("jetstream", str(err.get("description", err))[:200])
            self._say(logging.WARNING, "js_error", "databricks-nats: JetStream refused an event: %s", err)
            self.inflight[seq] = (rec, sent)  # retried by the ack timer
            return
        if resp.get("duplicate"):
            self._stats.duplicates += 1
        self._stats.ack_latency(time.monotonic() - sent)
        if self._stats.by_source is not None:
            self._stats.count_sources((rec.subject,), 1)
        self.ack([seq])

    def plain_ack(self, subject: bytes | str) -> None:
        """A plain ack (stored, not a duplicate) to ``<reply prefix><sequence>``: settled with its batch."""
        if not self._acks:
            self._loop.call_soon(self.settle_acks)
        self._acks.append(subject)

    def settle_acks(self) -> None:
        """Handle the plain acks received since the last loop iteration in one go."""
        subjects, self._acks = self._acks, []
        cut = len(self.link.reply_prefix)  # reply subjects are <prefix><seq>
        self.settle([int(subject[cut:]) for subject in subjects])

    def settle(self, seqs: list[int]) -> None:
        """These in-flight events are acknowledged (core: flushed); a sequence no longer in flight is ignored."""
        pop = self.inflight.pop
        now = time.monotonic()
        done, waited = [], []
        counted: list[str] | None = [] if self._stats.by_source is not None else None
        for seq in seqs:
            entry = pop(seq, None)
            if entry is not None:
                done.append(seq)
                waited.append(now - entry[1])
                if counted is not None:
                    counted.append(entry[0].subject)
        self._stats.ack_latencies(waited)
        if counted:
            self._stats.count_sources(counted, 1)
        self.ack(done)

    def ack(self, seqs: list[int]) -> None:
        self._stats.acked += len(seqs) - self.dead.stored(seqs)  # dead letters count as dropped (poison)
        self.buffer.done(seqs)
        self._work()

    def drop(self, seqs: list[int], reason: str) -> None:
        """Events the server will never take (permissions, a refused dead letter): dropped and counted."""
        self.dead.forget(seqs)
        self.buffer.forget(seqs, reason)
        self.buffer.done(seqs)

    def drop_subject(self, subject: str, reason: str) -> None:
        self.drop([seq for seq, (rec, _) in self.inflight.items() if rec.subject == subject], reason)

    def forget(self, seqs: list[int]) -> None:
        """Dropped by the buffer: no longer in flight."""
        for seq in seqs:
            self.inflight.pop(seq, None)

    # ---- flush waiters ---------------------------------------------------------------------------

    def wait_for(self, boundary: int, fut: asyncio.Future[bool]) -> None:
        """A flush resolved once no event up to ``boundary`` is pending (True: one of them was dropped)."""
        self._flushers.append((boundary, fut))

    def update_flushers(self) -> None:
        if not self._flushers:
            return
        lowest = self.buffer.lowest_pending()
        still = []
        for boundary, fut in self._flushers:
            if fut.done():
                continue
            if lowest is None or lowest > boundary:
                fut.set_result(self.buffer.lost_upto(boundary))
            else:
                still.append((boundary, fut))
        self._flushers = still

    def stop(self) -> list[asyncio.Task[None]]:
        """At shutdown: the ack timer stops; the core flushes still running, for the publisher to end."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return list(self.flushing)
