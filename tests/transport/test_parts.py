"""Each part of the publisher alone, its neighbour parts replaced by small fakes that record what they are asked.

The spools are the real ones (ours); the link is tested against a real nats-server. Nothing here fakes
nats-py or the server.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest

from databricks_nats.model.events import Event, new_event
from databricks_nats.settings import resolve_settings
from databricks_nats.transport.connection import Link
from databricks_nats.transport.delivery import Sender
from databricks_nats.transport.ingest import Ingest
from databricks_nats.transport.poison import Limits
from databricks_nats.transport.spool import MemorySpool, Record
from databricks_nats.transport.stats import RateLimitedLog, Stats
from databricks_nats.transport.storage import Buffer
from databricks_nats.transport.wire import frame

SUBJECT = "dbx.ws.dev.custom.thing.happened"


def settings(**kw: Any) -> Any:
    return resolve_settings(environ={}, spark_conf={}, **{"workspace": "ws", "env": "dev", **kw})


def encoder(event: Event, max_bytes: int) -> tuple[str, bytes]:
    if event.data.get("bad"):
        raise ValueError("not encodable")
    return SUBJECT, json.dumps({"id": event.id, "data": event.data}).encode()


def events(n: int, **data: Any) -> list[Event]:
    return [new_event("custom.thing.happened", {"n": i, **data}) for i in range(n)]


def rec(seq: int, subject: str = SUBJECT, size: int = 10) -> Record:
    return Record(seq, f"id-{seq}", subject, b"x" * size)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def say() -> RateLimitedLog:
    import logging

    return RateLimitedLog(logging.getLogger("test_parts"))


# ---- Ingest: its neighbour is the sender's flush waiters --------------------------------------------------


def make_ingest(spool: Any = None, *, cap: int = 100, immediate: bool = False) -> tuple[Ingest, list[Any]]:
    ingest = Ingest(encoder, Limits(8192), spool or MemorySpool(10**6), Stats(), say(), cap=cap, immediate=immediate)
    boundaries: list[Any] = []
    ingest.on_boundary = lambda seq, fut: boundaries.append((seq, fut))
    return ingest, boundaries


def test_ingest_caps_the_inbox_and_emit_many_counts_like_emit() -> None:
    ingest, _ = make_ingest(cap=3)
    assert ingest.put(events(1)[0])
    assert ingest.put_many(events(4)) == 2  # two fit under the cap, two are dropped
    assert not ingest.put(events(1)[0])
    assert ingest._stats.dropped["queue_full"] == 3
    assert ingest.emitted() == 6  # every event handed over, accepted or dropped


def test_ingest_encodes_in_sequence_drops_invalid_events_and_stops_at_a_flush_boundary(loop: Any) -> None:
    ingest, boundaries = make_ingest()
    ingest.put_many(events(2))
    ingest.put(new_event("custom.thing.happened", {"bad": True}))
    flush = loop.create_future()
    ingest.wait(flush)  # a flush after the first three events
    ingest.put_many(events(2))
    taken, records = ingest.encode(1000, skip_upto=0)
    assert taken == 3  # stopped at the flush's boundary
    assert [r.seq for r in records] == [1, 2]  # the invalid one has no sequence
    assert boundaries == [(2, flush)]  # the flush waits for sequence 2
    assert ingest._stats.dropped["invalid"] == 1
    taken, records = ingest.encode(1000, skip_upto=0)
    assert (taken, [r.seq for r in records]) == (2, [3, 4])


def test_ingest_in_immediate_mode_is_on_disk_before_put_returns(tmp_path: Any) -> None:
    spool = MemorySpool(10**6)
    ingest, _ = make_ingest(spool, immediate=True)
    ingest.put_many(events(3))
    assert spool.count() == 3  # stored in the caller's thread
    taken, records = ingest.encode(1000, skip_upto=1)  # the first was read back from the spool meanwhile
    assert taken == 3
    assert [r.seq for r in records] == [2, 3]
    assert ingest.last_seq == 3


# ---- Buffer: its neighbours are the ingest part, the sender and the publisher ------------------------------


class FakeIngest:
    immediate = False

    def __init__(self) -> None:
        self.inbox: deque[Record] = deque()
        self.ingested = 0
        self.last_seq = 0

    def add(self, n: int) -> None:
        for _ in range(n):
            self.last_seq += 1
            self.inbox.append(rec(self.last_seq))

    def encode(self, most: int, skip_upto: int) -> tuple[int, list[Record]]:
        taken = [self.inbox.popleft() for _ in range(min(most, len(self.inbox)))]
        self.ingested += len(taken)
        return len(taken), taken

    def advance(self, seq: int) -> None:
        self.last_seq = max(self.last_seq, seq)


class FakeSender:
    def __init__(self) -> None:
        self.inflight: set[int] = set()
        self.forgotten: list[int] = []
        self.updates = 0

    def __len__(self) -> int:
        return len(self.inflight)

    def forget(self, seqs: list[int]) -> None:
        self.forgotten += seqs
        self.inflight.difference_update(seqs)

    def update_flushers(self) -> None:
        self.updates += 1


def make_buffer(loop: Any, spool: Any = None, **kw: Any) -> tuple[Buffer, FakeIngest, FakeSender, list[str]]:
    ingest, sender, calls = FakeIngest(), FakeSender(), []
    buffer = Buffer(
        settings(**kw),
        spool or MemorySpool(10**6),
        ingest,  # type: ignore[arg-type]
        Stats(),
        say(),
        loop,
        wake=lambda: calls.append("wake"),
        work=lambda: calls.append("work"),
    )
    buffer.sender = sender
    return buffer, ingest, sender, calls


def test_buffer_keeps_events_in_memory_then_writes_them_behind(loop: Any) -> None:
    buffer, ingest, sender, _ = make_buffer(loop)
    ingest.add(3)
    buffer.fill(volatile=False)
    assert [r.seq for r in buffer.ready] == [1, 2, 3]
    assert len(buffer.unsaved) == 3
    assert buffer.spool.count() == 0
    assert sender.updates == 1
    buffer.save()  # what the 50 ms timer does
    assert buffer.spool.count() == 3
    assert not buffer.unsaved
    assert buffer.secured == 3
    assert buffer.lowest_pending() == 1


def test_buffer_spills_what_memory_cannot_hold_and_reads_it_back_in_order(loop: Any) -> None:
    buffer, ingest, _, _ = make_buffer(loop, memory_max_events=4)
    ingest.add(10)
    buffer.fill(volatile=False)
    assert [r.seq for r in buffer.ready] == [1, 2, 3, 4]
    assert buffer.spilled
    assert buffer.spool.count() == 10  # the unsaved four went first: the rows stay in order
    buffer.done([1, 2, 3, 4])
    buffer.commit()
    buffer.ready.clear()
    buffer.refill()
    assert [r.seq for r in buffer.ready] == [5, 6, 7, 8]


def test_buffer_core_mode_while_connected_keeps_what_does_not_fit_in_the_inbox(loop: Any) -> None:
    buffer, ingest, _, calls = make_buffer(loop, memory_max_events=4, mode="core")
    ingest.add(6)
    buffer.fill(volatile=True)
    assert len(buffer.ready) == 4
    assert buffer._save_timer is None
    assert len(ingest.inbox) == 2
    assert buffer.spool.count() == 0
    assert "wake" not in calls


def test_buffer_done_forgets_unsaved_events_and_deletes_saved_ones(loop: Any) -> None:
    buffer, ingest, _, _ = make_buffer(loop)
    ingest.add(2)
    buffer.fill(volatile=False)
    buffer.save()
    ingest.add(1)
    buffer.fill(volatile=False)
    buffer.done([1, 3])  # 3 never touched the disk
    assert 3 not in buffer.unsaved
    assert buffer.spool.count() == 2
    buffer.commit()  # once per loop iteration
    assert buffer.spool.count() == 1
    assert buffer.lowest_pending() == 2


def test_buffer_forget_tells_the_sender_and_the_next_flush(loop: Any) -> None:
    buffer, ingest, sender, _ = make_buffer(loop)
    ingest.add(3)
    buffer.fill(volatile=False)
    sender.inflight = {1}
    buffer.forget([1, 2], "spool_full")
    assert [r.seq for r in buffer.ready] == [3]
    assert sender.forgotten == [1, 2]
    assert not sender.inflight
    assert buffer._stats.dropped["spool_full"] == 2
    assert buffer.lost_upto(1) is False  # a flush up to 1 does not cover the drop (its highest is 2)
    assert buffer.lost_upto(2) is True
    assert buffer.lost_upto(2) is False  # reported once


def test_buffer_live_lane_sends_new_events_before_the_backlog_and_never_twice(loop: Any) -> None:
    spool = MemorySpool(10**6)
    spool.append([rec(seq) for seq in range(1, 2001)])  # a backlog of 2,000 on disk (adopted)
    buffer, ingest, _, _ = make_buffer(loop, spool, memory_max_events=1500)
    ingest.last_seq = 2000
    assert buffer.spilled
    buffer.refill()  # the first backlog batch
    assert buffer.ready[0].seq == 1
    assert len(buffer.ready) == 1000
    ingest.add(5)  # new events while the backlog waits
    buffer.fill(volatile=False)
    assert [r.seq for r in buffer.ready][-5:] == [2001, 2002, 2003, 2004, 2005]  # right behind the batch
    buffer.save()  # the live events are on disk too now
    for _ in range(3):
        buffer.ready.clear()
        buffer.refill()
    seen = [r.seq for r in buffer.ready]
    assert 2001 not in seen
    assert not buffer.spilled
    assert not buffer.live


# ---- Sender: its neighbours are the buffer and the link -----------------------------------------------------


class FakeBuffer:
    spilled = False

    def __init__(self, records: list[Record]) -> None:
        self.ready = deque(records)
        self.pending = {r.seq for r in records}
        self.done_seqs: list[int] = []
        self.forgotten: list[tuple[list[int], str]] = []

    def refill(self) -> None:
        pass

    def done(self, seqs: list[int]) -> None:
        self.done_seqs += seqs
        self.pending.difference_update(seqs)

    def forget(self, seqs: list[int], reason: str) -> None:
        self.forgotten.append((seqs, reason))
        self.pending.difference_update(seqs)

    def lowest_pending(self) -> int | None:
        return min(self.pending, default=None)

    def lost_upto(self, boundary: int) -> bool:
        return any(boundary >= max(s) for s, _ in self.forgotten)


class FakeLink:
    connected = True
    fast = True
    reply_prefix = "_INBOX.test."

    def __init__(self, fail_writes: bool = False) -> None:
        self.limits = Limits(8192)
        self.limits.set(1024 * 1024, len(self.reply_prefix))
        self.out: list[tuple[str, Any]] = []  # ("frame", bytes) or ("publish", Record), in order
        self.fail_writes = fail_writes
        self.no_streams = 0

    async def write(self, frames: list[bytes]) -> None:
        if self.fail_writes:
            raise ConnectionError("buffer full")
        self.out += [("frame", f) for f in frames]

    async def publish(self, rec: Record, reply: str) -> None:
        self.out.append(("publish", rec))

    async def flush(self, timeout: float) -> None:
        pass

    async def no_stream(self) -> None:
        self.no_streams += 1


def make_sender(loop: Any, records: list[Record], **kw: Any) -> tuple[Sender, FakeBuffer, FakeLink, list[str]]:
    buffer, link, calls = FakeBuffer(records), FakeLink(kw.pop("fail_writes", False)), []
    sender = Sender(
        settings(**kw),
        buffer,
        link,
        Stats(),
        say(),
        loop,
        work=lambda: calls.append("work"),
    )
    return sender, buffer, link, calls


def test_sender_publishes_in_order_frames_after_a_subjects_first_event_within_the_window(loop: Any) -> None:
    sender, buffer, link, _ = make_sender(loop, [rec(s) for s in range(1, 6)], max_inflight=4)
    assert loop.run_until_complete(sender.send_some())
    assert [kind for kind, _ in link.out] == ["publish", "frame", "frame", "frame"]  # window: 4
    assert link.out[1][1] == frame(SUBJECT, "_INBOX.test.2", "id-2", b"x" * 10)
    assert len(sender) == 4
    assert [r.seq for r in buffer.ready] == [5]
    sender.settle([1, 2])
    assert buffer.done_seqs == [1, 2]
    assert sender._stats.acked == 2
    assert len(sender) == 2


def test_sender_resolves_a_flush_once_nothing_up_to_its_boundary_is_pending(loop: Any) -> None:
    sender, _buffer, _, _ = make_sender(loop, [rec(s) for s in range(1, 4)])
    loop.run_until_complete(sender.send_some())
    flush = loop.create_future()
    sender.wait_for(2, flush)
    sender.settle([1])
    sender.update_flushers()
    assert not flush.done()
    sender.settle([2])
    sender.update_flushers()
    assert flush.result() is False  # nothing up to 2 was dropped


def test_sender_dead_letters_an_event_whose_subject_cannot_fit_and_counts_it_as_poison(loop: Any) -> None:
    huge = rec(1, subject="dbx.ws.dev." + "k" * 5000)
    sender, _buffer, link, _ = make_sender(loop, [huge, rec(2)])
    loop.run_until_complete(sender.send_some())
    (_, letter), (_, second) = link.out
    assert letter.subject == "dbx.ws.dev._dead.control_line"
    assert letter.id == "id-1"
    assert second.seq == 2  # the event behind it is not blocked
    sender.settle([1, 2])
    assert sender._stats.dropped["poison"] == 1
    assert sender._stats.acked == 1


def test_sender_requeues_in_order_what_the_link_could_not_take(loop: Any) -> None:
    sender, buffer, _link, _ = make_sender(loop, [rec(s) for s in range(1, 4)], fail_writes=True)
    sender._subjects.add(SUBJECT)  # known plain: every event takes the fast path
    assert not loop.run_until_complete(sender.send_some())
    assert [r.seq for r in buffer.ready] == [1, 2, 3]
    assert len(sender) == 0
    assert sender._stats.published == 0
    assert sender._stats.errors["publish"] == 1


def test_sender_resends_what_was_not_acknowledged_in_time(loop: Any) -> None:
    sender, buffer, _, calls = make_sender(loop, [rec(1)], ack_timeout=0.05)
    loop.run_until_complete(sender.send_some())
    loop.run_until_complete(asyncio.sleep(0.1))  # the ack timer fires
    assert [r.seq for r in buffer.ready] == [1]
    assert sender._stats.retried == 1
    assert "work" in calls


def test_sender_settles_plain_acks_in_one_batch_and_reads_the_others(loop: Any) -> None:
    from nats.aio.msg import Msg

    sender, buffer, link, _ = make_sender(loop, [rec(s) for s in range(1, 4)])
    loop.run_until_complete(sender.send_some())

    def ack(seq: int, body: dict[str, Any]) -> Msg:
        return Msg(_client=None, subject=f"{link.reply_prefix}{seq}", data=json.dumps(body).encode())  # type: ignore[arg-type]

    async def acks() -> None:
        await sender.on_ack(ack(1, {"stream": "S", "seq": 1}))
        await sender.on_ack(ack(2, {"stream": "S", "seq": 2, "duplicate": True}))
        await sender.on_ack(ack(3, {"error": {"code": 500, "description": "busy"}}))
        await asyncio.sleep(0)  # the batch of plain acks is settled once per loop iteration

    loop.run_until_complete(acks())
    assert sorted(buffer.done_seqs) == [1, 2]
    assert sender._stats.duplicates == 1
    assert len(sender) == 1
    assert sender._stats.errors["jetstream"] == 1


# ---- Link: against a real nats-server; its neighbours are the sender and the buffer -------------------------


class FakeFlight:
    def __init__(self) -> None:
        self.requeued = 0
        self.dropped: list[tuple[str, str]] = []
        self.records: list[tuple[int, Record]] = []
        self.acks: list[tuple[str, Any]] = []  # ("plain", reply subject) or ("msg", body)

    async def on_ack(self, msg: Any) -> None:
        self.acks.append(("msg", json.loads(msg.data)))

    def plain_ack(self, subject: bytes | str) -> None:
        self.acks.append(("plain", subject))

    def requeue_all(self) -> None:
        self.requeued += 1

    def in_flight(self) -> Iterator[tuple[int, Record]]:
        return iter(self.records)

    def drop_subject(self, subject: str, reason: str) -> None:
        self.dropped.append((subject, reason))


class FakeSaver:
    saves = 0

    def save(self) -> None:
        self.saves += 1


def test_link_connects_takes_the_servers_limits_and_writes_frames_nats_py_can_read(nats_server: Any) -> None:
    import nats

    async def run() -> tuple[Link, FakeFlight, list[Any]]:
        link = Link(settings(url=nats_server.url, mode="core"), Stats(), say())
        flight = FakeFlight()
        link.sender, link.buffer = flight, FakeSaver()
        link.start(asyncio.get_running_loop())
        while not link.connected:
            await asyncio.sleep(0.01)
        sub_nc = await nats.connect(nats_server.url)
        sub = await sub_nc.subscribe(SUBJECT)
        await sub_nc.flush()
        await link.write([frame(SUBJECT, "", "id-1", b'{"a":1}'), frame(SUBJECT, "", "id-2", b"{}")])
        await link.publish(rec(3), "")
        got = [await sub.next_msg(timeout=5) for _ in range(3)]
        await sub_nc.close()
        await link.close()
        for task in link.tasks():
            task.cancel()
        return link, flight, got

    link, flight, got = asyncio.run(run())
    assert link.fast
    assert flight.requeued == 1
    assert link.limits.max_payload == 1024 * 1024
    assert link.limits.fast_subject > 0
    assert [(m.headers, m.data) for m in got[:2]] == [
        ({"Nats-Msg-Id": "id-1", "Content-Type": "application/cloudevents+json"}, b'{"a":1}'),
        ({"Nats-Msg-Id": "id-2", "Content-Type": "application/cloudevents+json"}, b"{}"),
    ]
    assert got[2].headers == {"Nats-Msg-Id": "id-3", "Content-Type": "application/cloudevents+json"}


def test_link_learns_a_refused_size_and_hands_permission_errors_to_the_sender() -> None:
    link = Link(settings(), Stats(), say())
    flight = FakeFlight()
    flight.records = [(1, rec(1, size=100)), (2, rec(2, size=5000))]
    link.sender, link.buffer = flight, FakeSaver()
    link.learn_refusal("nats: maximum payload exceeded")
    assert link.limits.learned_payload is not None
    assert link.limits.learned_payload < 5000 + 100
    link.limits.set(1024 * 1024, 0)
    assert link.limits.max_payload == link.limits.learned_payload  # lower than announced, kept
    asyncio.run(link.on_error(Exception('nats: permissions violation for publish to "a.b"')))
    assert flight.dropped == [("a.b", "permission_denied")]


def test_link_hands_plain_jetstream_acks_to_the_sender_and_the_others_as_messages(
    nats_server: Any, namespace: Any
) -> None:
    async def run() -> tuple[Link, FakeFlight]:
        link = Link(settings(url=nats_server.url, **namespace), Stats(), say())
        flight = FakeFlight()
        link.sender, link.buffer = flight, FakeSaver()
        link.start(asyncio.get_running_loop())
        while not link.connected:
            await asyncio.sleep(0.01)
        subject = f"{link.settings.namespace}.custom.thing.happened"
        await link.write([frame(subject, f"{link.reply_prefix}1", "id-1", b"{}")])
        await link.write([frame(subject, f"{link.reply_prefix}2", "id-1", b"{}")])  # the same id again
        for _ in range(500):
            if len(flight.acks) == 2:
                break
            await asyncio.sleep(0.01)
        await link.close()
        for task in link.tasks():
            task.cancel()
        return link, flight

    link, flight = asyncio.run(run())
    assert link.stream_report is not None  # the stream was provisioned at connect (auto_create_stream)
    (kind, subject), (other, body) = flight.acks
    assert (kind, subject) == ("plain", f"{link.reply_prefix}1".encode())
    assert other == "msg"
    assert body["duplicate"] is True
