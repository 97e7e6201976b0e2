"""The bytes of one publish as nats-py writes them (HPUB with our two headers), the checks that let the
sender build them itself for subjects and ids it knows are plain, and their writing into nats-py's output
buffer (the fast path: what ``Client.publish`` does per message, once per batch). Anything else goes through
nats-py's own ``publish``, which validates it and raises what the poison checks turn into dead letters.

The way back (``take_plain_acks``): a plain JetStream ack (no headers, no error, not a duplicate) on our
reply subscription is handed to the sender as the parser read it, without a ``Msg``, a queue and a task
per ack; every other message on it takes nats-py's own path to the subscription's callback.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from databricks_nats.model.events import CE_CONTENT_TYPE
from databricks_nats.transport.spool import Record

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

__all__ = [
    "FAST_ID",
    "HEADER_BYTES",
    "MAX_CONTROL_LINE",
    "frame",
    "plain_id",
    "plain_subject",
    "publish",
    "take_plain_acks",
    "writable",
    "write",
]

MAX_CONTROL_LINE = 4096  # nats-server's default max_control_line; not in its INFO, so assumed until refused
_HEAD = "NATS/1.0\r\nNats-Msg-Id: "
_TAIL = f"\r\nContent-Type: {CE_CONTENT_TYPE}\r\n\r\n"
# Bytes of the header block written for our two headers, without the id's own characters.
HEADER_BYTES = len(_HEAD) + len(_TAIL)
FAST_ID = 64  # ids up to this long are covered by the fast size check (ours are 36)

plain_id = re.compile(r"[!-~]{1,64}").fullmatch  # printable ASCII, no space: written as is (nats-py would too)
_BAD_SUBJECT = re.compile(r"[ \t\r\n]").search  # nats-py's publish check: no space, tab, CR or LF


def plain_subject(subject: str) -> bool:
    """A subject nats-py's ``publish`` would accept as it is."""
    return bool(subject) and _BAD_SUBJECT(subject) is None


def frame(subject: str, reply: str, msg_id: str, payload: bytes) -> bytes:
    """``HPUB <subject> <reply> <header bytes> <total bytes>`` + headers + payload, as nats-py's ``publish``
    writes it for ``headers={"Nats-Msg-Id": msg_id, "Content-Type": CE_CONTENT_TYPE}`` (a plain id)."""
    hdr = HEADER_BYTES + len(msg_id)
    return f"HPUB {subject} {reply} {hdr} {hdr + len(payload)}\r\n{_HEAD}{msg_id}{_TAIL}".encode() + payload + b"\r\n"


_RAW = ("_pending", "_pending_data_size", "_max_pending_size", "_flush_queue", "_flush_pending", "stats")


def writable(nc: Any) -> bool:
    """This nats-py client has the output buffer ``write`` knows (else every event takes ``publish``)."""
    return all(hasattr(nc, name) for name in _RAW) and isinstance(nc._pending, list)


async def write(nc: NATS | None, frames: list[bytes]) -> None:
    """Append built frames to nats-py's output buffer and wake its flusher, as its ``publish`` does."""
    from nats import errors

    if nc is None or nc.is_closed:
        raise errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise errors.ConnectionDrainingError
    data = b"".join(frames)
    size = len(data)
    limit = nc._max_pending_size
    if not nc.is_connected and (limit <= 0 or size + nc._pending_data_size > limit):
        raise errors.OutboundBufferLimitError  # reconnecting, and its buffer is full
    nc._pending.append(data)
    nc._pending_data_size += size
    nc.stats["out_msgs"] += len(frames)
    nc.stats["out_bytes"] += size
    if limit > 0 and nc._pending_data_size > limit:
        await nc._flush_pending(force_flush=True)
    elif nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


async def publish(nc: NATS | None, rec: Record, reply: str) -> None:
    """nats-py's own publish of one event (it validates the subject and headers)."""
    from nats import errors

    if nc is None:
        raise errors.ConnectionClosedError
    await nc.publish(rec.subject, rec.payload, reply, {"Nats-Msg-Id": rec.id, "Content-Type": CE_CONTENT_TYPE})


def take_plain_acks(nc: Any, sid: Any, plain: Callable[[bytes], None]) -> bool:
    """Hand the plain acks arriving on subscription ``sid`` straight to ``plain`` (their reply subject);
    False when this nats-py does not dispatch messages the way this knows (then every ack takes its path)."""
    original = getattr(nc, "_process_msg", None)
    if original is None or not isinstance(sid, int) or sid not in getattr(nc, "_subs", {}):
        return False

    async def process(msg_sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if msg_sid == sid and not headers and b'"error"' not in data and b'"duplicate"' not in data:
            plain(subject)
            return
        await original(msg_sid, subject, reply, data, headers)

    nc._process_msg = process
    return True
