"""The bytes of one publish as nats-py writes them (HPUB with our two headers), and the checks that let the
sender build them itself for subjects and ids it knows are plain (the fast path; anything else goes through
nats-py's own ``publish``, which validates it and raises what the poison checks turn into dead letters).
"""

from __future__ import annotations

import re

from databricks_nats.model.events import CE_CONTENT_TYPE

__all__ = ["FAST_ID", "HEADER_BYTES", "MAX_CONTROL_LINE", "frame", "plain_id", "plain_subject"]

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
